"""A real edge (uvicorn on a free port, in a thread) against a real broker, per test module."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from processor.config import Settings, load_settings
from processor.edge.server import EdgeServer
from processor.kafka.client_config import message_max_bytes
from processor.registry.watcher import RegistryWatcher
from tests.builders import write_registry
from tests.integration.sentinel import is_sentinel, produce_sentinels


def create_raw_topic(bootstrap: str, topic: str, settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=1, replication_factor=1,
                   config={"max.message.bytes": str(message_max_bytes(settings))})
    admin.create_topics([new])[topic].result(30)


@dataclass
class RawReader:
    """Reads the raw topic (one partition) from the start; remembers what it saw."""

    bootstrap: str
    topic: str
    seen: list[Message] = field(default_factory=list)
    _consumer: Consumer | None = None

    def _poll_more(self, wait: float, until_offset: int | None = None) -> None:
        """Poll for ``wait`` seconds, or (with ``until_offset``) until that offset was read."""
        if self._consumer is None:
            self._consumer = Consumer({
                "bootstrap.servers": self.bootstrap,
                "group.id": "edge-test-" + uuid.uuid4().hex,
                "enable.auto.commit": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 32 * 1024 * 1024,
            })
            self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            msg = self._consumer.poll(0.2)
            if msg is not None and not msg.error():
                if not is_sentinel(msg.headers()):
                    self.seen.append(msg)
                if until_offset is not None and msg.offset() >= until_offset:
                    return
        if until_offset is not None:
            raise AssertionError(f"sentinel at offset {until_offset} of {self.topic} not read back")

    def by_ack_id(self, ack_control_id: str, wait: float = 20.0) -> Message:
        """The record whose ingest id starts with the ACK's MSH-10 (the edge derives one from the other)."""
        deadline = time.monotonic() + wait
        while True:
            for msg in self.seen:
                ingest = dict(msg.headers() or []).get("hl7.ingest_id", b"").decode()
                if ingest.replace("-", "").startswith(ack_control_id):
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no record for ACK {ack_control_id}")
            self._poll_more(0.5)

    def all(self) -> list[Message]:
        """Every record stored so far. Reads up to a sentinel produced now (see
        tests/integration/sentinel.py) instead of "poll a while": whatever the edge stored
        before this call is below the sentinel, so an absence check cannot pass early."""
        [offset] = produce_sentinels(self.bootstrap, self.topic, [0]).values()
        self._poll_more(60.0, until_offset=offset)
        return list(self.seen)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class RunningEdge:
    url: str
    settings: Settings
    reader: RawReader
    server: EdgeServer
    registry_path: Path
    watcher: RegistryWatcher

    def stop(self) -> None:
        self.server.stop()
        self.watcher.stop()
        self.reader.close()

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kw)  # type: ignore[arg-type]


def wait_ready(url: str, want: int = 200, timeout: float = 60.0, verify: bool | ssl.SSLContext = True) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url + "/readyz", timeout=5, verify=verify).status_code
        except httpx.HTTPError:
            status = None
        if status == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"/readyz stayed {status}, wanted {want}")


def start_edge(bootstrap: str, directory: Path, *, verify: bool | ssl.SSLContext = True, **overrides: object) -> RunningEdge:
    topic = f"edge-test.raw.{uuid.uuid4().hex[:12]}"
    registry_path = write_registry(directory)
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        registry_file=str(registry_path),
        edge_host="127.0.0.1",
        edge_port=0,
        topic_raw=topic,
        trusted_proxies="127.0.0.1/32",
        publish_timeout_seconds=overrides.pop("publish_timeout_seconds", 5.0),
        login_failures_per_minute=overrides.pop("login_failures_per_minute", 3),
        login_lockout_seconds=overrides.pop("login_lockout_seconds", 30),
        **overrides,
    )
    create_raw_topic(bootstrap, topic, settings)
    watcher = RegistryWatcher(registry_path, 0.5)
    watcher.start()
    server = EdgeServer(settings, lambda: watcher.current)
    url = server.start()
    wait_ready(url, verify=verify)
    return RunningEdge(url, settings, RawReader(bootstrap, topic), server, registry_path, watcher)


@pytest.fixture(scope="module")
def edge(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEdge]:
    running = start_edge(kafka_bootstrap, tmp_path_factory.mktemp("edge"))
    try:
        yield running
    finally:
        running.stop()
