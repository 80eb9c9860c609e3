"""SOAP 1.1 intake through a real SOAP client (zeep) using the WSDL the edge serves."""

from __future__ import annotations

import httpx
import pytest
import requests
from zeep import Client
from zeep.transports import Transport

from processor.hl7.soap import SERVICE_NS
from tests.builders import SEED_PASSWORD, SEED_USER, basic
from tests.corpus import seed_message
from tests.integration.edge.conftest import RunningEdge

pytestmark = pytest.mark.kafka

SOAP_XML = "text/xml; charset=utf-8"


def zeep_client(edge: RunningEdge, user: str = SEED_USER, password: str = SEED_PASSWORD) -> Client:
    session = requests.Session()
    session.auth = (user, password)
    return Client(edge.url + "/soap?wsdl", transport=Transport(session=session, timeout=60))


def envelope(arg0: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:ws="{SERVICE_NS}"><soapenv:Body><ws:acceptMessage><arg0>{arg0}</arg0>'
        "</ws:acceptMessage></soapenv:Body></soapenv:Envelope>"
    ).encode()


def test_wsdl_names_the_listening_socket_without_a_public_url(edge: RunningEdge) -> None:
    resp = httpx.get(edge.url + "/soap?wsdl", headers={"Host": "evil.example"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/xml")
    assert f'location="{edge.url}/soap"' in resp.text


def test_zeep_client_gets_aa_and_message_stored_exactly(edge: RunningEdge) -> None:
    payload = seed_message(control_id=b"SOAP1")
    ack = zeep_client(edge).service.acceptMessage(payload.decode())
    segments = {s.split("|")[0]: s.split("|") for s in ack.split("\r") if s}
    assert segments["MSA"][1:3] == ["AA", "SOAP1"]
    record = edge.reader.by_ack_id(segments["MSH"][9])
    assert record.value() == payload  # zeep writes CR as &#13;, so CRs survive
    headers = dict(record.headers())
    assert headers["hl7.transport"] == b"soap"
    assert record.key() == b"mailco|trustalias{trustalias}"


def test_zeep_client_rejection_is_ar(edge: RunningEdge) -> None:
    ack = zeep_client(edge).service.acceptMessage(seed_message(msh4=b"trustalias{nosuch}").decode())
    assert "|AR|" in ack and "UNKNOWN_DATA_CONTROLLER_ALIAS" in ack


def test_cdata_arg0_with_lf_segments(edge: RunningEdge) -> None:
    text = seed_message(control_id=b"CDATA1").decode().replace("\r", "\n")
    resp = httpx.post(edge.url + "/soap", content=envelope(f"<![CDATA[{text}]]>"),
                      headers={"Content-Type": SOAP_XML, "Authorization": basic(SEED_USER, SEED_PASSWORD)})
    assert resp.status_code == 200
    assert "acceptMessageResponse" in resp.text and "|AA|CDATA1" in resp.text


def test_http_errors_on_soap_are_faults(edge: RunningEdge) -> None:
    url = edge.url + "/soap"
    good = basic(SEED_USER, SEED_PASSWORD)
    cases = [
        ({"Content-Type": SOAP_XML}, envelope("x"), 401),
        ({"Content-Type": "application/soap+xml", "Authorization": good}, envelope("x"), 415),
        ({"Content-Type": SOAP_XML, "Authorization": good}, b"<not-soap/>", 400),
        ({"Content-Type": SOAP_XML, "Authorization": good}, envelope("PID|1"), 400),  # no MSH
        ({"Content-Type": SOAP_XML, "Authorization": good},
         b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', 400),
    ]
    for headers, body, status in cases:
        resp = httpx.post(url, content=body, headers=headers)
        assert resp.status_code == status, (status, resp.text)
        assert "<faultcode>soap:Client</faultcode>" in resp.text
        assert resp.headers["content-type"].startswith("text/xml")
    unauth = httpx.post(url, content=envelope("x"), headers={"Content-Type": SOAP_XML})
    assert unauth.headers["www-authenticate"] == 'Basic realm="HL7 API"'


def test_get_soap_without_wsdl_is_a_fault(edge: RunningEdge) -> None:
    resp = httpx.get(edge.url + "/soap")
    assert resp.status_code == 400 and "soap:Client" in resp.text
