"""Edge behaviour that needs no broker: catch-all errors, missing registry, readiness.

The publisher here is a stand-in that fails on purpose; Kafka behaviour itself is tested
against a real broker in tests/integration/edge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from starlette.testclient import TestClient

from processor.config import load_settings
from processor.edge.app import create_app
from processor.registry.loader import parse_registry
from processor.registry.model import Registry
from tests.builders import PASSWORD, SEED_PASSWORD, SEED_USER, basic, registry_yaml
from tests.corpus import PATIENT_MARKERS, seed_message

AUTH = {"Authorization": basic(SEED_USER, SEED_PASSWORD), "Content-Type": "application/hl7-v2"}


class ExplodingPublisher:
    """Fails every publish with an unexpected exception (a bug, not a Kafka outage)."""

    ready = True

    def start(self) -> None:
        pass

    def close(self, timeout: float = 0) -> int:
        return 0

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        raise ValueError("boom " + value.decode("latin-1"))  # an exception text that leaks content


@pytest.fixture(scope="module")
def registry() -> Registry:
    return parse_registry(registry_yaml().encode())


def make_client(registry: Registry | None) -> TestClient:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1")
    app = create_app(settings, lambda: registry, publisher=ExplodingPublisher())  # type: ignore[arg-type]
    return TestClient(app)


def test_unexpected_error_is_a_clear_500_without_traceback_or_content(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with make_client(registry) as client:
        resp = client.post("/hl7", content=seed_message(), headers=AUTH)
        soap = client.post("/soap", content=_soap_envelope(), headers={**AUTH, "Content-Type": "text/xml"})
    assert resp.status_code == 500
    assert "not acknowledged" in resp.text and "Traceback" not in resp.text and "boom" not in resp.text
    assert soap.status_code == 500 and "<faultcode>soap:Server</faultcode>" in soap.text
    errors = [r for r in caplog.records if r.name == "processor.edge.app" and r.levelno >= logging.ERROR]
    assert errors and all("ValueError" in r.getMessage() and "ingest_id=" in r.getMessage() for r in errors)
    assert all(r.exc_info is None for r in errors)
    text = caplog.text
    for marker in PATIENT_MARKERS:
        assert marker not in text


def _soap_envelope() -> bytes:
    from xml.sax.saxutils import escape

    return (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:w="http://wsssl.hl7api.patientsknowbest.com/"><s:Body><w:acceptMessage><arg0>'
        + escape(seed_message().decode(), {"\r": "&#13;"})
        + "</arg0></w:acceptMessage></s:Body></s:Envelope>"
    ).encode()


def test_registry_not_loaded_is_503_and_not_ready() -> None:
    with make_client(None) as client:
        resp = client.post("/hl7", content=seed_message(), headers=AUTH)
        assert resp.status_code == 503 and resp.headers["retry-after"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["registry"] is False
        assert client.get("/livez").status_code == 200


def test_wsdl_uses_configured_public_url(registry: Registry) -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1", edge_public_url="https://hl7.example.org/")
    app = create_app(settings, lambda: registry, publisher=ExplodingPublisher())  # type: ignore[arg-type]
    with TestClient(app) as client:
        resp = client.get("/soap?wsdl")
    assert 'location="https://hl7.example.org/soap"' in resp.text


def test_wsdl_address_never_comes_from_host_or_forwarded_headers(registry: Registry) -> None:
    """Without HL7_EDGE_PUBLIC_URL the WSDL names the socket's own address, even from a
    trusted proxy; with it, exactly the configured address (SPEC 4)."""
    hostile = {"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    for public_url, expected in (
        (None, "http://edge.test:80/soap"),  # the server address TestClient gives the app (base_url)
        ("https://hl7.example.org/", "https://hl7.example.org/soap"),
    ):
        for trusted in ("", "0.0.0.0/0"):
            settings = load_settings(
                kafka_bootstrap_servers="127.0.0.1:1", trusted_proxies=trusted, edge_public_url=public_url
            )
            app = create_app(settings, lambda: registry, publisher=ExplodingPublisher())  # type: ignore[arg-type]
            with TestClient(app, base_url="http://edge.test", client=("10.0.0.5", 40000)) as client:
                resp = client.get("/soap?wsdl", headers=hostile)
            assert resp.status_code == 200
            assert f'location="{expected}"' in resp.text
            assert "evil.example" not in resp.text


def test_forwarded_for_over_several_header_lines_is_read_as_one_list(registry: Registry) -> None:
    """A client-sent X-Forwarded-For line followed by the proxy's own line (HAProxy's
    ``option forwardfor`` appends one): the proxy's hop is the client, not the forged one."""
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1", trusted_proxies="10.0.0.0/8")
    app = create_app(settings, lambda: registry, publisher=ExplodingPublisher())  # type: ignore[arg-type]
    auth = {"Authorization": basic("partner_net", PASSWORD), "Content-Type": "application/hl7-v2"}
    with TestClient(app, client=("10.0.0.5", 40000)) as client:
        forged_then_real = client.post("/hl7", content=seed_message(), headers=[
            *auth.items(), ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "198.51.100.7"),
        ])
        real_in_network = client.post("/hl7", content=seed_message(), headers=[
            *auth.items(), ("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "203.0.113.9"),
        ])
    assert forged_then_real.status_code == 403  # 198.51.100.7 is outside partner_net's network
    assert real_in_network.status_code == 500  # allowed through to the (exploding) publisher


def test_wrong_method_is_405_with_allow_and_a_soap_fault_on_soap(registry: Registry) -> None:
    with make_client(registry) as client:
        soap = client.put("/soap", content=b"<x/>", headers=AUTH)
        hl7 = client.get("/hl7")
    assert soap.status_code == 405 and soap.headers["content-type"].startswith("text/xml")
    assert "<faultcode>soap:Client</faultcode>" in soap.text and "Method Not Allowed" in soap.text
    assert set(soap.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert hl7.status_code == 405 and hl7.text == "Method Not Allowed\n" and "POST" in hl7.headers["allow"]


def test_bench_route_only_in_bench_mode(registry: Registry) -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1")
    for bench, status in ((False, 404), (True, 200)):
        app = create_app(settings, lambda: registry, publisher=ExplodingPublisher(), bench=bench)  # type: ignore[arg-type]
        with TestClient(app) as client:
            assert client.post("/bench/ping", content=b"x", headers=AUTH).status_code == status


class BusyAuthenticator:
    """Every cold credential check refused because the argon2 queue is full."""

    async def verify_async(self, username: str, password: str) -> None:
        from processor.registry.credentials import AuthenticatorBusy

        raise AuthenticatorBusy("queue full")

    def guess_key(self, username: str, password: str) -> bytes:
        return f"{username}\0{password}".encode()

    def close(self) -> None:
        pass


def test_full_argon2_queue_is_503_retry_not_a_failed_login(registry: Registry) -> None:
    settings = load_settings(kafka_bootstrap_servers="127.0.0.1:1")
    app = create_app(
        settings, lambda: registry, publisher=ExplodingPublisher(),  # type: ignore[arg-type]
        authenticator=BusyAuthenticator(),  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        replies = [client.post("/hl7", content=seed_message(), headers=AUTH) for _ in range(15)]
    assert {r.status_code for r in replies} == {503}
    assert all(r.headers["Retry-After"] == "1" for r in replies)
    # Not counted as failed logins: more than the per-minute limit, still no 429 lockout.
    assert all("WWW-Authenticate" not in r.headers for r in replies)
