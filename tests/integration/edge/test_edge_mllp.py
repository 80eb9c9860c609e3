"""MLLP over TLS with client certificates (SPEC 4a) against a real edge and a real broker.

Certificates are made in the test (``mllp_kit``); the client is a plain blocking TLS
socket, so what is asserted is what an HL7 engine on the other end would see.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from processor.raw import HEADER_INGEST_ID, HEADER_RECEIVED_AT, HEADER_TRANSPORT
from tests.builders import SEED_PASSWORD, SEED_USER, adt_a01, basic, hl7_message
from tests.corpus import seed_message
from tests.integration.edge.conftest import RunningEdge
from tests.integration.edge.mllp_kit import (
    EB,
    SB,
    MllpClient,
    Pki,
    install_registry,
    mllp_address,
    registry_with_certificates,
    segments,
    start_mllp_edge,
)

pytestmark = pytest.mark.kafka

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def edge(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningEdge]:
    running = start_mllp_edge(kafka_bootstrap, tmp_path_factory.mktemp("edge"), pki, max_body_bytes=MAX_BODY,
                              login_failures_per_minute=1000)
    try:
        yield running
    finally:
        running.stop()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def headers_of(msg) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v.decode() for k, v in msg.headers()}


def test_one_connection_1000_messages_acked_and_stored_in_order(edge: RunningEdge, pki: Pki) -> None:
    ids = [b"BULK%04d" % i for i in range(1000)]
    before = value("hl7_edge_requests_total", transport="mllp", status="200", ack="AA")
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        # All sent at once (pipelined, as engines with a send window do); the edge answers in order.
        client.send_raw(b"".join(SB + hl7_message(control_id=i) + EB for i in ids))
        acks = [segments(client.ack()) for _ in ids]
    assert [a["MSA"][1:3] for a in acks] == [["AA", i.decode()] for i in ids]
    assert value("hl7_edge_requests_total", transport="mllp", status="200", ack="AA") == before + 1000
    stored = [m for m in edge.reader.all() if headers_of(m)[HEADER_TRANSPORT] == "mllp"
              and m.value().split(b"|")[9].startswith(b"BULK")]
    assert [m.value().split(b"|")[9] for m in stored] == ids
    assert {m.key() for m in stored} == {b"mailco|trustalias{trustalias}"}
    # each ACK names its own stored record (ACK MSH-10 = start of the ingest id)
    assert [a["MSH"][9] for a in acks] == [headers_of(m)[HEADER_INGEST_ID].replace("-", "")[:20] for m in stored]


@pytest.mark.parametrize("who", ["no certificate", "unknown certificate", "another CA's certificate"])
def test_client_refused_without_ack(edge: RunningEdge, pki: Pki, who: str) -> None:
    client_cert = {"no certificate": None, "unknown certificate": pki.unknown,
                   "another CA's certificate": pki.foreign}[who]
    reason = "unknown_certificate" if who == "unknown certificate" else "tls_handshake"
    before = value("hl7_edge_auth_failures_total", reason=reason)
    control = f"REFUSED-{who.split()[0]}".encode()
    try:
        client = MllpClient(mllp_address(edge), pki.client_context(client_cert))
    except (ssl.SSLError, ConnectionError):
        refused = True  # TLS 1.2 style: the handshake itself failed on the client's side
    else:
        with client:
            try:
                client.send(seed_message(control_id=control))
            except (ssl.SSLError, ConnectionError):
                pass
            refused = client.closed_without_ack()
    assert refused
    assert value("hl7_edge_auth_failures_total", reason=reason) == before + 1
    assert not [m for m in edge.reader.all() if control in m.value()]


def test_self_signed_certificate_in_the_bundle_and_customer_login(edge: RunningEdge, pki: Pki) -> None:
    install_registry(edge, registry_with_certificates([pki.known.fingerprint, pki.self_signed.fingerprint.upper()],
                                                      [pki.customer.fingerprint]))
    with MllpClient(mllp_address(edge), pki.client_context(pki.self_signed)) as client:
        assert segments(client.request(seed_message(control_id=b"SELF1")))["MSA"][1:3] == ["AA", "SELF1"]
    with MllpClient(mllp_address(edge), pki.client_context(pki.customer)) as client:
        ack = client.request(adt_a01("trustalias{trustalias}", control_id="CUST1"))
        assert segments(ack)["MSA"][1:3] == ["AA", "CUST1"]
    stored = {m.value().split(b"|")[9]: headers_of(m) for m in edge.reader.all()}
    assert stored[b"SELF1"]["hl7.principal_id"] == "mailco"
    assert stored[b"CUST1"]["hl7.principal_id"] == "trust-1"
    assert stored[b"CUST1"]["hl7.principal_type"] == "customer"


def test_garbage_and_frames_without_msh_keep_the_connection(edge: RunningEdge, pki: Pki) -> None:
    before = value("hl7_edge_requests_total", transport="mllp", status="400", ack="AR")
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        client.send_raw(b"\r\n noise before a start block \x1c\r")  # ignored
        ack = segments(client.request(b"PID|1||nothing here"))
        assert ack["MSA"][1:3] == ["AR", ""] and ack["MSH"][11] == "2.5"
        assert ack["ERR"][3].startswith("100^")
        assert segments(client.request(seed_message(control_id=b"AFTERNOISE")))["MSA"][1] == "AA"
    assert value("hl7_edge_requests_total", transport="mllp", status="400", ack="AR") == before + 1
    assert not [m for m in edge.reader.all() if m.value().startswith(b"PID|1||nothing")]


def test_frame_over_the_body_limit_closes_the_connection(edge: RunningEdge, pki: Pki) -> None:
    before = value("hl7_edge_requests_total", transport="mllp", status="413", ack="none")
    big = hl7_message(control_id=b"TOOBIG", size=MAX_BODY + 10)
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        try:
            client.send(big)
        except (ssl.SSLError, ConnectionError):
            pass
        assert client.closed_without_ack()
    assert value("hl7_edge_requests_total", transport="mllp", status="413", ack="none") == before + 1
    assert not [m for m in edge.reader.all() if b"|TOOBIG|" in m.value()]


REFUSALS = {
    "accepted": adt_a01("trustalias{trustalias}", control_id="SAME-AA"),
    "unknown alias": adt_a01("nosuch{nosuch}", control_id="SAME-AR1"),
    "not authorised": adt_a01("thirdalias{thirdalias}", control_id="SAME-AR2"),
    "enhanced mode": adt_a01("trustalias{trustalias}", control_id="SAME-CA", msh15="AL"),
    "malformed MSH": b"MSH|^~\\&|APP|trustalias{trustalias}|PKB\rPID|1\r",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_mllp_and_http_give_the_same_decision_and_record(edge: RunningEdge, pki: Pki, case: str) -> None:
    message = REFUSALS[case]
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        over_mllp = client.request(message)
    over_http = httpx.post(edge.url + "/hl7", content=message, timeout=60,
                           headers={"Content-Type": "application/hl7-v2", "Authorization": basic(SEED_USER, SEED_PASSWORD)})
    assert over_http.status_code == 200
    a, b = segments(over_mllp), segments(over_http.content)
    assert a["MSA"][1:] == b["MSA"][1:]
    assert a.get("ERR") == b.get("ERR")
    assert a["MSH"][:6] == b["MSH"][:6] and a["MSH"][8:9] == b["MSH"][8:9] and a["MSH"][10:] == b["MSH"][10:]
    by_ack = {}
    for ack in (a, b):
        by_ack[ack["MSH"][9]] = edge.reader.by_ack_id(ack["MSH"][9])
    mllp_rec, http_rec = by_ack[a["MSH"][9]], by_ack[b["MSH"][9]]
    assert mllp_rec.value() == http_rec.value() == message
    assert mllp_rec.key() == http_rec.key()
    differ = {HEADER_TRANSPORT, HEADER_INGEST_ID, HEADER_RECEIVED_AT}
    hm, hh = headers_of(mllp_rec), headers_of(http_rec)
    assert (hm[HEADER_TRANSPORT], hh[HEADER_TRANSPORT]) == ("mllp", "http")
    assert {k: v for k, v in hm.items() if k not in differ} == {k: v for k, v in hh.items() if k not in differ}
    assert len(mllp_rec.headers()) == len(http_rec.headers())


def test_certificate_removed_from_registry_is_refused_at_the_next_message(edge: RunningEdge, pki: Pki) -> None:
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        assert segments(client.request(seed_message(control_id=b"BEFORE")))["MSA"][1] == "AA"
        install_registry(edge, registry_with_certificates([], [pki.customer.fingerprint]))
        try:
            client.send(seed_message(control_id=b"AFTERREMOVAL"))
        except (ssl.SSLError, ConnectionError):
            pass
        assert client.closed_without_ack()
    install_registry(edge, registry_with_certificates([pki.known.fingerprint], [pki.customer.fingerprint]))
    with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
        assert segments(client.request(seed_message(control_id=b"READDED")))["MSA"][1] == "AA"
    assert not [m for m in edge.reader.all() if b"|AFTERREMOVAL|" in m.value()]


def test_open_connections_gauge(edge: RunningEdge, pki: Pki) -> None:
    base = value("hl7_edge_mllp_connections")
    clients = [MllpClient(mllp_address(edge), pki.client_context(pki.known)) for _ in range(3)]
    try:
        for i, client in enumerate(clients):  # a reply proves each connection is being served
            assert segments(client.request(seed_message(control_id=b"G%d" % i)))["MSA"][1] == "AA"
        assert value("hl7_edge_mllp_connections") == base + 3
    finally:
        for client in clients:
            client.close()


def test_plain_tcp_client_is_refused_on_the_tls_port(edge: RunningEdge) -> None:
    with socket.create_connection(mllp_address(edge), timeout=60) as sock:
        sock.sendall(SB + seed_message(control_id=b"PLAIN") + EB)
        try:
            assert sock.recv(65536) == b""  # closed: no ACK in clear
        except ConnectionError:
            pass


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # asking for TLS 1.0/1.1 on purpose
def test_tls_below_1_2_is_refused(edge: RunningEdge, pki: Pki) -> None:
    context = pki.client_context(pki.known)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        context.set_ciphers("ALL:@SECLEVEL=0")
        client = MllpClient(mllp_address(edge), context)
    except (ssl.SSLError, ConnectionError):
        return  # refused (or this OpenSSL cannot even offer TLS 1.1: nothing below 1.2 gets through)
    with client:
        pytest.fail(f"negotiated {client.sock.version()}")  # type: ignore[attr-defined]


def test_registry_check_refuses_a_fingerprint_under_two_principals(tmp_path: Path, pki: Pki) -> None:
    from processor.errors import RegistryInvalid
    from processor.registry.loader import parse_registry

    text = registry_with_certificates([pki.known.fingerprint], [pki.known.fingerprint.upper()])
    with pytest.raises(RegistryInvalid) as err:
        parse_registry(text.encode())
    assert any("duplicate client certificate" in e for e in err.value.errors)


def test_allowed_networks_apply_to_certificate_logins(edge: RunningEdge, pki: Pki) -> None:
    # the unknown client's certificate, registered for netco (allowed from 203.0.113.0/24 only)
    text = registry_with_certificates([pki.known.fingerprint], [pki.customer.fingerprint]).replace(
        '    allowed_networks: ["203.0.113.0/24"]\n',
        f'    allowed_networks: ["203.0.113.0/24"]\n    client_certificates: ["{pki.unknown.fingerprint}"]\n', 1)
    install_registry(edge, text)
    before = value("hl7_edge_auth_failures_total", reason="network_not_allowed")
    try:
        with MllpClient(mllp_address(edge), pki.client_context(pki.unknown)) as client:
            try:
                client.send(seed_message(control_id=b"FROMOUTSIDE"))
            except (ssl.SSLError, ConnectionError):
                pass
            assert client.closed_without_ack()
        assert value("hl7_edge_auth_failures_total", reason="network_not_allowed") == before + 1
        assert not [m for m in edge.reader.all() if b"|FROMOUTSIDE|" in m.value()]
    finally:
        install_registry(edge, registry_with_certificates([pki.known.fingerprint], [pki.customer.fingerprint]))
