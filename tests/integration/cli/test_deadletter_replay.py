"""Dead-letter replay end to end: a refused message is accepted once the grant exists."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from processor.avro.codec import AvroCodec
from processor.cli import main
from processor.deadletter_replay import DeadLetterReplayer, ReplayCriteria
from processor.registry.watcher import RegistryWatcher
from processor.stream.processor import StreamProcessor
from tests.integration.stream.stream_kit import (
    RawIn,
    hl7_message,
    produce_raw,
    raw_headers,
    read_outputs,
    registry_text,
    stream_settings,
    wait_for,
    write_atomically,
)

pytestmark = pytest.mark.kafka


def _env_for(monkeypatch: pytest.MonkeyPatch, settings) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("HL7_TOPIC_RAW", settings.topic_raw)
    monkeypatch.setenv("HL7_TOPIC_ACCEPTED", settings.topic_accepted)
    monkeypatch.setenv("HL7_TOPIC_DEADLETTER", settings.topic_deadletter)
    monkeypatch.setenv("HL7_CONSUMER_GROUP", settings.consumer_group)
    monkeypatch.setenv("HL7_REGISTRY_FILE", str(settings.registry_file))


def test_replay_after_grant_is_added_accepts_exactly_once(
    kafka_bootstrap: str, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text(grant_trust1=False))
    settings = stream_settings(kafka_bootstrap, unique_name, registry_file, topic_partitions=1)
    codec = AvroCodec.from_settings(settings, register=False)
    watcher = RegistryWatcher(registry_file, 0.2)
    watcher.start()
    processor = StreamProcessor(settings, watcher)
    worker = threading.Thread(target=processor.run, daemon=True)
    worker.start()
    try:
        refused = hl7_message(b"trustalias{trustalias}", b"REPLAY001")
        unknown = hl7_message(b"nosuch{nosuch}", b"REPLAY002")
        produce_raw(settings, [
            RawIn(refused, raw_headers(ingest_id="11111111-1111-4111-8111-111111111111")),
            RawIn(unknown, raw_headers(ingest_id="22222222-2222-4222-8222-222222222222")),
        ])
        first = read_outputs(settings, expect=2)
        reasons = sorted(codec.decode(r.value)["reason"] for r in first)
        assert reasons == ["PARTNER_NOT_AUTHORISED", "UNKNOWN_CONNECTING_ALIAS"]

        _env_for(monkeypatch, settings)
        # Before the fix: the dead letter would be refused again, so it is left alone.
        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED", "--execute", "--yes"]) == 0
        early = capsys.readouterr().out
        assert "0 dead letter(s) match" in early
        assert "1 matching dead letter(s) would still be refused" in early
        assert "now PARTNER_NOT_AUTHORISED: 1" in early
        assert len(read_outputs(settings, expect=2, timeout=5)) == 2

        old_version = watcher.current.version
        write_atomically(registry_file, registry_text(grant_trust1=True))
        assert wait_for(lambda: watcher.current.version != old_version, 15)

        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED"]) == 0
        dry = capsys.readouterr().out
        assert "1 dead letter(s) match" in dry and "dry run" in dry
        assert len(read_outputs(settings, expect=2, timeout=5)) == 2  # dry run published nothing

        # A second operator scans now, and publishes only after the first replay ran.
        stale_replayer = DeadLetterReplayer(settings)
        stale = stale_replayer.scan(ReplayCriteria(reasons=frozenset({"PARTNER_NOT_AUTHORISED"})), watcher.current)
        assert len(stale.chosen) == 1

        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED", "--execute", "--yes"]) == 0
        assert "replayed 1 record(s)" in capsys.readouterr().out
        # Its scan is stale, but the ledger is read again once its producer owns the
        # transactional id: nothing is replayed twice.
        assert stale_replayer.publish(stale.chosen) == 0

        outputs = read_outputs(settings, expect=3)
        accepted = [r for r in outputs if r.topic == settings.topic_accepted]
        assert len(accepted) == 1
        record = codec.decode(accepted[0].value)
        assert record["ingest_id"] == "11111111-1111-4111-8111-111111111111"
        assert record["payload"] == refused
        assert record["connecting_customer_id"] == "trust-1"
        assert accepted[0].header("hl7.replay_of").startswith(f"{settings.topic_deadletter}:0:")

        # A second replay finds the same dead letter in the ledger and publishes nothing.
        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED", "--execute", "--yes"]) == 0
        again = capsys.readouterr().out
        assert "0 dead letter(s) match; 1 already replayed" in again
        assert len(read_outputs(settings, expect=3, timeout=10)) == 3
    finally:
        processor.stop()
        worker.join(60)
        watcher.stop()
