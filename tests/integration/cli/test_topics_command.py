"""``hl7-processor topics create`` against the real broker (SPEC 5 + 7): the three topics,
idempotent, each accepting records up to the edge body limit.

Only what the SPEC promises is checked here (partitions, ``max.message.bytes``, running it
twice); the per-topic settings and ``--check`` have tests of their own.
"""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from processor.cli import main
from tests import contract

pytestmark = pytest.mark.kafka


def _env(monkeypatch: pytest.MonkeyPatch, bootstrap: str, unique_name, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    names = {
        "HL7_TOPIC_RAW": unique_name("raw"),
        "HL7_TOPIC_ACCEPTED": unique_name("accepted"),
        "HL7_TOPIC_DEADLETTER": unique_name("deadletter"),
    }
    for name in list(os.environ):
        if name.startswith("HL7_") and not name.startswith("HL7_TEST_"):
            monkeypatch.delenv(name)  # only the documented defaults apply
    for name, value in {"HL7_KAFKA_BOOTSTRAP_SERVERS": bootstrap, **names, **extra}.items():
        monkeypatch.setenv(name, value)
    return names


def _describe(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, int]]:
    """{topic: (partitions, max.message.bytes)} as the broker has them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    out = {}
    for resource, future in admin.describe_configs(resources).items():
        configs = future.result(30)
        out[resource.name] = (len(meta[resource.name].partitions), int(configs["max.message.bytes"].value))
    return out


def test_creates_the_three_topics_idempotently_for_the_default_body_limit(
    kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    names = _env(monkeypatch, kafka_bootstrap, unique_name)
    topics = list(names.values())
    assert main(["topics", "create", "--partitions", "3"]) == 0
    first = _describe(kafka_bootstrap, topics)
    limit = contract.DEFAULTS["HL7_MAX_BODY_BYTES"]
    assert isinstance(limit, int)
    for topic, (partitions, max_bytes) in first.items():
        assert partitions == 3, topic
        # SPEC 5: topics accept records up to the edge body limit (plus key and headers)
        assert max_bytes >= limit, (topic, max_bytes)
    capsys.readouterr()

    # Idempotent: again (even asking for other partitions) succeeds and changes nothing.
    assert main(["topics", "create", "--partitions", "5"]) == 0
    assert _describe(kafka_bootstrap, topics) == first
    out = capsys.readouterr().out
    for topic in topics:
        assert topic in out


def test_topics_follow_a_configured_body_limit(
    kafka_bootstrap: str, unique_name, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 12 * contract.MIB
    names = _env(monkeypatch, kafka_bootstrap, unique_name, HL7_MAX_BODY_BYTES=str(limit), HL7_TOPIC_PARTITIONS="2")
    assert main(["topics", "create"]) == 0
    for topic, (partitions, max_bytes) in _describe(kafka_bootstrap, list(names.values())).items():
        assert partitions == 2, topic
        assert max_bytes >= limit, (topic, max_bytes)
