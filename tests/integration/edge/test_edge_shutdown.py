"""Graceful shutdown: stop accepting, finish the request in flight, then flush Kafka."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.corpus import seed_message
from tests.integration.edge.conftest import start_edge
from tests.integration.edge.support import SEED_PASSWORD, SEED_USER, basic

pytestmark = pytest.mark.kafka


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except OSError:
        return True


def test_in_flight_request_completes_during_shutdown(kafka_bootstrap: str, tmp_path: Path) -> None:
    edge = start_edge(kafka_bootstrap, tmp_path)
    port = int(edge.url.rsplit(":", 1)[1])
    payload = seed_message(control_id=b"INFLIGHT")
    head = (
        b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
        b"Authorization: " + basic(SEED_USER, SEED_PASSWORD).encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(payload)
    )
    stopper = threading.Thread(target=edge.stop)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + payload[:100])  # the request is now in flight
            time.sleep(0.3)
            stopper.start()
            deadline = time.monotonic() + 20
            while not _refused(port):  # the listener closes first
                assert time.monotonic() < deadline, "edge kept accepting during shutdown"
                time.sleep(0.1)
            sock.sendall(payload[100:])
            reply = b""
            while part := sock.recv(65536):  # shutting down: the edge closes after replying
                reply += part
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b"MSA|AA|INFLIGHT" in reply
        stopper.join(60)
        assert not stopper.is_alive()
        assert any(m.value() == payload for m in edge.reader.all())
    finally:
        if stopper.ident is None:
            edge.stop()
        else:
            stopper.join(60)
        edge.reader.close()
