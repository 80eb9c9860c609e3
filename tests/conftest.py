"""Session-wide fixtures: a real Kafka broker and unique names.

Where the broker comes from, in this order: ``HL7_TEST_KAFKA_BOOTSTRAP`` if set; a
testcontainers Kafka when a Docker engine answers; otherwise a local Apache Kafka
started from the pinned Maven Central jars (``processor.kafka.local_broker``).
Tests share one broker and isolate themselves by unique topic and group names.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

_counter = itertools.count()


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("HL7_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if os.environ.get("HL7_TEST_USE_DOCKER", "1") == "1" and _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from processor.kafka.local_broker import LocalKafka

    broker = LocalKafka()
    try:
        yield broker.start()
    finally:
        broker.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of names no other test (or earlier run on a shared broker) uses."""
    run = uuid.uuid4().hex[:8]
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]

    def make(prefix: str) -> str:
        return f"{prefix}.{test}.{run}.{next(_counter)}"

    return make
