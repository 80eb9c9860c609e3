"""SOAP wrapper: PKB envelope parsing, hostile XML refused, zeep interoperability."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import zeep
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from zeep.transports import Transport

from processor.errors import SoapError
from processor.hl7.ack import AckOutcome, build_ack
from processor.hl7.header import read_header
from processor.hl7.soap import (
    PORT_NAME,
    SERVICE_NAME,
    SERVICE_NS,
    SOAP_NS,
    build_accept_response,
    build_fault,
    build_wsdl,
    message_bytes,
    parse_accept_message,
)
from tests.corpus import PATIENT_MARKERS, load, seed_message

SEED = seed_message().decode()


def envelope(arg0_xml: str, *, ns: str = SERVICE_NS, header: str = "", prefix: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{prefix}'
        f'<S:Envelope xmlns:S="{SOAP_NS}">{header}<S:Body>'
        f'<ns2:acceptMessage xmlns:ns2="{ns}">{arg0_xml}</ns2:acceptMessage>'
        "</S:Body></S:Envelope>"
    ).encode()


def test_cdata_with_raw_cr_is_normalised_to_lf() -> None:
    got = parse_accept_message(envelope(f"<arg0><![CDATA[{SEED}]]></arg0>"))
    assert got == SEED.replace("\r", "\n")
    assert read_header(got.encode()).segment_terminator == "\n"


def test_char_reference_cr_is_kept() -> None:
    escaped = SEED.replace("&", "&amp;").replace("\r", "&#13;")
    assert parse_accept_message(envelope(f"<arg0>{escaped}</arg0>")) == SEED


def test_crlf_inside_cdata_becomes_lf() -> None:
    got = parse_accept_message(envelope("<arg0><![CDATA[MSH|a\r\nPID|b\r\n]]></arg0>"))
    assert got == "MSH|a\nPID|b\n"


def test_qualified_arg0_header_and_unicode() -> None:
    body = envelope(f'<ns2:arg0>{"é€".join(["MSH", "x"])}</ns2:arg0>',
                    header="<S:Header><x:h xmlns:x='urn:x'/></S:Header>")
    assert parse_accept_message(body) == "MSHé€x"


def test_empty_arg0_returns_empty_text() -> None:
    assert parse_accept_message(envelope("<arg0/>")) == ""


BAD = {
    "not xml": b"MSH|^~\\&|",
    "empty": b"",
    "truncated": envelope("<arg0>x</arg0>")[:-10],
    "soap 1.2": envelope("<arg0>x</arg0>").replace(SOAP_NS.encode(), b"http://www.w3.org/2003/05/soap-envelope"),
    "wrong operation namespace": envelope("<arg0>x</arg0>", ns="http://example.com/"),
    "no arg0": envelope(""),
    "two arg0": envelope("<arg0>a</arg0><arg0>b</arg0>"),
    "wrong child": envelope("<arg1>x</arg1>"),
    "element inside arg0": envelope("<arg0><b>x</b></arg0>"),
    "no body": f'<S:Envelope xmlns:S="{SOAP_NS}"/>'.encode(),
    "two bodies": f'<S:Envelope xmlns:S="{SOAP_NS}"><S:Body/><S:Body/></S:Envelope>'.encode(),
    "other root": b"<acceptMessage/>",
}


@pytest.mark.parametrize("body", BAD.values(), ids=BAD.keys())
def test_bad_requests_are_soap_errors(body: bytes) -> None:
    with pytest.raises(SoapError):
        parse_accept_message(body)


HOSTILE = {
    "xxe file": envelope("<arg0>&xxe;</arg0>",
                         prefix='<!DOCTYPE S:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'),
    "xxe http": envelope("<arg0>&xxe;</arg0>",
                         prefix='<!DOCTYPE S:Envelope [<!ENTITY xxe SYSTEM "http://127.0.0.1:1/x">]>'),
    "billion laughs": envelope(
        "<arg0>&lol9;</arg0>",
        prefix="<!DOCTYPE S:Envelope [<!ENTITY lol \"lol\">"
        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
        + "]>"),
    "external dtd": envelope("<arg0>x</arg0>", prefix='<!DOCTYPE S:Envelope SYSTEM "http://127.0.0.1:1/d.dtd">'),
    "parameter entity": envelope(
        "<arg0>x</arg0>",
        prefix='<!DOCTYPE S:Envelope [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p.dtd"> %p;]>'),
    "internal dtd only": envelope("<arg0>x</arg0>", prefix="<!DOCTYPE S:Envelope []>"),
    "unparsed entity": envelope(
        "<arg0>x</arg0>", prefix='<!DOCTYPE S:Envelope [<!NOTATION n SYSTEM "n"><!ENTITY u SYSTEM "u" NDATA n>]>'),
    "dtd without document": b'<!DOCTYPE S:Envelope [<!ENTITY lol "lol">]>',
    "doctype without document": b"<!DOCTYPE S:Envelope>",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_xml_refused(body: bytes) -> None:
    with pytest.raises(SoapError) as info:
        parse_accept_message(body)
    assert str(info.value) == "SOAP request with a DTD, entity or external reference refused"


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_soap_error(data: bytes) -> None:
    try:
        parse_accept_message(data)
    except SoapError:
        pass


def test_error_texts_carry_no_content() -> None:
    with pytest.raises(SoapError) as info:
        parse_accept_message(envelope(f"<arg1>{SEED}</arg1>"))
    for marker in PATIENT_MARKERS:
        assert marker not in str(info.value)


def test_accept_response_keeps_cr_and_escapes() -> None:
    ack = "MSH|^~\\&|PKB|a<b>&c\rMSA|AA|1\r"
    root = fromstring(build_accept_response(ack))
    ret = root.find(f"{{{SOAP_NS}}}Body/{{{SERVICE_NS}}}acceptMessageResponse/return")
    assert ret is not None and ret.text == ack


def test_accept_response_drops_xml_illegal_characters() -> None:
    root = fromstring(build_accept_response("MSH|\x0b\x1c|x\r"))
    assert root.find(f".//{{{SERVICE_NS}}}acceptMessageResponse/return").text == "MSH|\ufffd\ufffd|x\r"


@pytest.mark.parametrize("code", ["soap:Client", "soap:Server"])
def test_fault(code: str) -> None:
    root = fromstring(build_fault(code, "bad <credentials> & more"))
    fault = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    assert fault is not None
    assert fault.findtext("faultcode") == code
    assert fault.findtext("faultstring") == "bad <credentials> & more"


def test_fault_rejects_other_codes() -> None:
    with pytest.raises(ValueError):
        build_fault("Client", "x")


def test_message_bytes_follow_msh18() -> None:
    latin = load("adt_a01_v24_latin1")
    assert message_bytes(latin.decode("latin-1")) == latin
    assert message_bytes(SEED) == SEED.encode()
    utf8 = "MSH|^~\\&|SYSTÈME|a{b}|c|d|1||ADT^A01|1|P|2.5\r"
    assert message_bytes(utf8) == utf8.encode("utf-8")
    # declared Latin-1 but holding a character Latin-1 lacks: UTF-8 rather than loss
    odd = "MSH|^~\\&|€|a{b}|c|d|1||ADT^A01|1|P|2.5||||||8859/1\r"
    assert message_bytes(odd) == odd.encode("utf-8")
    assert message_bytes("") == b""


# --------------------------------------------------------------- zeep interoperability


class _EdgeTransport(Transport):
    """Answers zeep's POST like the edge would: unwrap, read MSH, ACK, wrap."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[str] = []

    def post_xml(self, address, envelope, headers):  # type: ignore[no-untyped-def]
        text = parse_accept_message(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))
        self.received.append(text)
        ack = build_ack(read_header(text.encode()), AckOutcome.ACCEPT, control_id="ACK-1",
                        timestamp=datetime(2024, 1, 1, tzinfo=timezone.utc))
        response = requests.Response()
        response.status_code = 200
        response._content = build_accept_response(ack.decode())
        response.headers["Content-Type"] = 'text/xml; charset="utf-8"'
        response.encoding = "utf-8"
        return response


@pytest.fixture()
def wsdl_file(tmp_path: Path) -> Path:
    path = tmp_path / "hl7.wsdl"
    path.write_bytes(build_wsdl("https://gateway.example.test/soap"))
    return path


def test_zeep_loads_wsdl(wsdl_file: Path) -> None:
    client = zeep.Client(str(wsdl_file))
    service = client.wsdl.services[SERVICE_NAME]
    port = service.ports[PORT_NAME]
    assert port.binding_options["address"] == "https://gateway.example.test/soap"
    assert "acceptMessage" in port.binding._operations


def test_zeep_request_parses_and_keeps_cr(wsdl_file: Path) -> None:
    client = zeep.Client(str(wsdl_file))
    node = client.create_message(client.service, "acceptMessage", arg0=SEED)
    assert parse_accept_message(etree.tostring(node)) == SEED


def test_zeep_round_trip_through_our_response(wsdl_file: Path) -> None:
    transport = _EdgeTransport()
    client = zeep.Client(str(wsdl_file), transport=transport)
    result = client.service.acceptMessage(arg0=SEED)
    assert transport.received == [SEED]
    assert isinstance(result, str)
    assert result.startswith("MSH|^~\\&|PKB|PKB|PAS|trustalias{trustalias}|")
    assert result.split("\r")[1] == "MSA|AA|MSG00001"


def test_wsdl_escapes_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.wsdl"
    path.write_bytes(build_wsdl('https://h.example.test/soap?a=1&b="2"'))
    client = zeep.Client(str(path))
    port = client.wsdl.services[SERVICE_NAME].ports[PORT_NAME]
    assert port.binding_options["address"] == 'https://h.example.test/soap?a=1&b="2"'


def test_http_charset_decodes_an_envelope_without_xml_declaration() -> None:
    """RFC 7303: for text/xml the Content-Type charset tells how the body is encoded."""
    text = "MSH|^~\\&|SYST\u00c8ME|trustalias{trustalias}|PKB|PKB|20240101||ADT^A01|C1|P|2.4"
    escaped = text.replace("&", "&amp;")
    body = envelope(f"<arg0>{escaped}</arg0>").split(b"?>", 1)[1].decode().encode("latin-1")
    assert parse_accept_message(body, "ISO-8859-1") == text
    with pytest.raises(SoapError):
        parse_accept_message(body)  # no charset, no declaration: XML says UTF-8, and it is not
    declared = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + body
    assert parse_accept_message(declared, "UTF-8") == text  # the declaration decides
    with pytest.raises(SoapError):
        parse_accept_message(body, "no-such-charset")  # unknown charset: ignored, so UTF-8 again
