"""Graceful shutdown: stop accepting, finish the request in flight, then flush Kafka."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.builders import SEED_PASSWORD, SEED_USER, basic
from tests.corpus import seed_message
from tests.integration.edge.conftest import start_edge

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


def test_serve_embeds_in_a_running_event_loop(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``serve()`` is what ``hl7-processor run`` can await next to other tasks."""
    import asyncio
    import uuid

    import httpx

    from processor.config import load_settings
    from processor.edge.server import serve
    from processor.kafka.local_broker import free_port
    from processor.registry.watcher import RegistryWatcher
    from tests.builders import write_registry
    from tests.integration.edge.conftest import RawReader, create_raw_topic

    topic = f"edge-test.serve.{uuid.uuid4().hex[:12]}"
    port = free_port()
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap, topic_raw=topic, edge_host="127.0.0.1",
                             edge_port=port)
    create_raw_topic(kafka_bootstrap, topic, settings)
    watcher = RegistryWatcher(write_registry(tmp_path))

    async def main() -> int:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(settings, lambda: watcher.current, ready_event=ready, stop_event=stop))
        await asyncio.wait_for(ready.wait(), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(100):  # the producer needs a moment to learn the topic's metadata
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            resp = await client.post("/hl7", content=seed_message(control_id=b"EMBED"), headers={
                "Content-Type": "application/hl7-v2", "Authorization": basic(SEED_USER, SEED_PASSWORD)})
        stop.set()
        await asyncio.wait_for(task, 60)
        return resp.status_code

    assert asyncio.run(main()) == 200
    reader = RawReader(kafka_bootstrap, topic)
    try:
        assert [m.value() for m in reader.all()] == [seed_message(control_id=b"EMBED")]
    finally:
        reader.close()
