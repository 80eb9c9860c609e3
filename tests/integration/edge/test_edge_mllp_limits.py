"""MLLP limits and lifecycle, each on an edge of its own (real TLS, real broker): the
per-address lock-out, certificate rotation without a restart, idle connections, the
connection cap, and plaintext development mode."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY

from tests.corpus import seed_message
from tests.integration.edge.mllp_kit import (
    EB,
    SB,
    MllpClient,
    Pki,
    make_cert,
    mllp_address,
    segments,
    start_mllp_edge,
)

pytestmark = pytest.mark.kafka


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _refused(client_factory) -> bool:  # type: ignore[no-untyped-def]
    try:
        client = client_factory()
    except (ssl.SSLError, ConnectionError):
        return True
    with client:
        try:
            client.send(seed_message(control_id=b"LOCKED"))
        except (ssl.SSLError, ConnectionError):
            pass
        return client.closed_without_ack()


def test_failed_handshakes_lock_the_address_out(kafka_bootstrap: str, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, login_failures_per_minute=3, login_lockout_seconds=300)
    try:
        address = mllp_address(edge)
        before = value("hl7_edge_auth_failures_total", reason="rate_limited")
        for _ in range(3):  # a foreign CA's certificate: failed handshakes, counted per address
            assert _refused(lambda: MllpClient(address, pki.client_context(pki.foreign)))
        # now even the right certificate is turned away from this address, before any TLS work
        assert _refused(lambda: MllpClient(address, pki.client_context(pki.known)))
        assert value("hl7_edge_auth_failures_total", reason="rate_limited") == before + 1
    finally:
        edge.stop()


def test_server_certificate_rotation_without_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    # the client's own refusals of the old certificate below are failed handshakes too
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, login_failures_per_minute=1000)
    try:
        address = mllp_address(edge)
        old_trust = pki.client_context(pki.known)
        held = MllpClient(address, old_trust)  # a connection open across the rotation
        assert segments(held.request(seed_message(control_id=b"ROT0")))["MSA"][1] == "AA"

        new_ca = make_cert("rotated server CA", ca=True)
        pki.write_server(make_cert("127.0.0.1", issuer=new_ca, server=True))
        only_new = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        only_new.load_verify_locations(cadata=new_ca.cert.public_bytes(Encoding.PEM).decode())
        cert, key = pki.known.write(tmp_path, "known-again")
        only_new.load_cert_chain(str(cert), str(key))

        deadline = time.monotonic() + 30
        while True:  # the edge looks at the files at most once a second, when a connection arrives
            try:
                with MllpClient(address, only_new) as client:
                    ack = client.request(seed_message(control_id=b"ROT1"))
                break
            except (ssl.SSLError, ConnectionError):
                assert time.monotonic() < deadline, "new server certificate never served"
                time.sleep(0.2)
        assert segments(ack)["MSA"][1] == "AA"
        # the connection opened before the rotation carries on with its session
        assert segments(held.request(seed_message(control_id=b"ROT2")))["MSA"][1] == "AA"
        held.close()
        # a client that trusts only the old CA no longer gets through
        with pytest.raises((ssl.SSLError, ConnectionError)):
            MllpClient(address, old_trust).close()
    finally:
        edge.stop()


def test_idle_connection_is_closed(kafka_bootstrap: str, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_idle_seconds=1.0)
    try:
        with MllpClient(mllp_address(edge), pki.client_context(pki.known)) as client:
            assert segments(client.request(seed_message(control_id=b"IDLE1")))["MSA"][1] == "AA"
            assert client.closed_without_ack()  # the edge closes it; recv() returns EOF
    finally:
        edge.stop()


def test_connections_over_the_cap_are_closed(kafka_bootstrap: str, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_max_connections=2)
    try:
        address = mllp_address(edge)
        before = value("hl7_edge_limit_refusals_total", limit="mllp_connections")
        first, second = (MllpClient(address, pki.client_context(pki.known)) for _ in range(2))
        for i, client in enumerate((first, second)):
            assert segments(client.request(seed_message(control_id=b"CAP%d" % i)))["MSA"][1] == "AA"
        assert _refused(lambda: MllpClient(address, pki.client_context(pki.known)))
        assert value("hl7_edge_limit_refusals_total", limit="mllp_connections") == before + 1
        first.close()
        deadline = time.monotonic() + 30
        while value("hl7_edge_mllp_connections") > 1 + 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the edge notices the close
        with MllpClient(address, pki.client_context(pki.known)) as third:
            assert segments(third.request(seed_message(control_id=b"CAP3")))["MSA"][1] == "AA"
        second.close()
    finally:
        edge.stop()


def test_plaintext_development_mode(kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = Pki.make(tmp_path)
    with caplog.at_level("WARNING", logger="processor.edge.mllp"):
        edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_plaintext=True,
                               mllp_plaintext_principal="mailco")
    try:
        assert any("PLAINTEXT" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
        with MllpClient(mllp_address(edge), None) as client:
            assert segments(client.request(seed_message(control_id=b"PLAIN1")))["MSA"][1:3] == ["AA", "PLAIN1"]
        [record] = [m for m in edge.reader.all() if b"|PLAIN1|" in m.value()]
        assert dict(record.headers())["hl7.principal_id"] == b"mailco"
        assert dict(record.headers())["hl7.transport"] == b"mllp"
    finally:
        edge.stop()


def test_silent_connections_from_one_address_cannot_hold_every_slot(kafka_bootstrap: str, tmp_path: Path) -> None:
    """An address with ``HL7_MLLP_MAX_HANDSHAKES_PER_ADDRESS`` handshakes in progress gets its
    next connections closed at once; a partner at another address keeps getting AA."""
    import socket

    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_max_handshakes_per_address=4,
                           mllp_handshake_timeout_seconds=30)
    attacker: list[socket.socket] = []
    try:
        address = mllp_address(edge)
        before = value("hl7_edge_limit_refusals_total", limit="mllp_handshakes")
        for _ in range(6):  # TCP connections that never start TLS, from 127.0.0.2
            sock = socket.create_connection(address, timeout=10, source_address=("127.0.0.2", 0))
            attacker.append(sock)
            time.sleep(0.05)  # accepted in order
        closed = []
        for sock in attacker:
            sock.settimeout(0.5)
            try:
                closed.append(sock.recv(1) == b"")
            except TimeoutError:
                closed.append(False)  # still held open, waiting for its handshake
        assert closed == [False] * 4 + [True] * 2
        assert value("hl7_edge_limit_refusals_total", limit="mllp_handshakes") == before + 2
        with MllpClient(address, pki.client_context(pki.known)) as partner:  # from 127.0.0.1
            assert segments(partner.request(seed_message(control_id=b"SLOTS1")))["MSA"][1] == "AA"
    finally:
        for sock in attacker:
            sock.close()
        edge.stop()


def test_acks_still_buffered_when_the_client_half_closes_are_delivered(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A client that sends its messages, shuts its sending side and only then reads gets every
    ACK: the edge closes the connection after the buffered ACKs are sent, not by dropping them."""
    pki = Pki.make(tmp_path)
    edge = start_mllp_edge(kafka_bootstrap, tmp_path, pki, mllp_plaintext=True, mllp_plaintext_principal="mailco")
    n = 450  # ACKs the small receive window cannot hold: most wait in the edge's buffer
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.settimeout(60)
        sock.connect(mllp_address(edge))
        sock.sendall(b"".join(SB + seed_message(control_id=b"HALF%04d" % i) + EB for i in range(n)))
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 60
        while sum(1 for m in edge.reader.all() if b"|HALF" in m.value()) < n:
            assert time.monotonic() < deadline, "messages not stored"
            time.sleep(0.2)
        time.sleep(1.0)  # the edge reads the end of the stream and closes
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        acks = [frame for frame in received.split(EB) if frame]
        assert len(acks) == n
        assert all(segments(ack[1:])["MSA"][1] == "AA" for ack in acks)
    finally:
        edge.stop()
