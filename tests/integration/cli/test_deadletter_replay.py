"""Dead-letter replay end to end: a refused message is accepted once the grant exists."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from processor.avro.codec import AvroCodec
from processor.cli import main
from processor.deadletter_replay import DeadLetterReplayer, ReplayCriteria
from processor.registry.watcher import RegistryWatcher
from processor.stream.processor import StreamProcessor
from tests.builders import PASSWORD_HASH, hl7_message, registry_text
from tests.integration.sentinel import outputs_through_sentinel, records_through_sentinel
from tests.integration.stream.stream_kit import (
    RawIn,
    produce_raw,
    raw_headers,
    read_outputs,
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


def raw_ingest_ids(settings) -> list[str]:  # type: ignore[no-untyped-def]
    """hl7.ingest_id of every committed raw record, read up to a sentinel produced now: a
    replay that published anything has committed it below the sentinel (no settle time), and
    one that returned with its transaction still open holds the read (fails after 20 s: the
    command must never return with an open transaction on hl7.raw, it stalls the processor)."""
    assert settings.kafka_bootstrap_servers
    return [
        dict(m.headers() or [])["hl7.ingest_id"].decode()
        for m in records_through_sentinel(settings.kafka_bootstrap_servers, settings.topic_raw, timeout=20)
    ]


REFUSED_ID = "11111111-1111-4111-8111-111111111111"
UNKNOWN_ID = "22222222-2222-4222-8222-222222222222"


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
            RawIn(refused, raw_headers(ingest_id=REFUSED_ID)),
            RawIn(unknown, raw_headers(ingest_id=UNKNOWN_ID)),
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
        assert raw_ingest_ids(settings) == [REFUSED_ID, UNKNOWN_ID]  # nothing re-published

        old_version = watcher.current.version
        write_atomically(registry_file, registry_text(grant_trust1=True))
        assert wait_for(lambda: watcher.current.version != old_version, 15)

        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED"]) == 0
        dry = capsys.readouterr().out
        assert "1 dead letter(s) match" in dry and "dry run" in dry
        assert raw_ingest_ids(settings) == [REFUSED_ID, UNKNOWN_ID]  # dry run published nothing

        # A second operator scans now, and publishes only after the first replay ran.
        stale_replayer = DeadLetterReplayer(settings)
        stale = stale_replayer.scan(ReplayCriteria(reasons=frozenset({"PARTNER_NOT_AUTHORISED"})), watcher.current)
        assert len(stale.chosen) == 1

        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED", "--execute", "--yes"]) == 0
        assert "replayed 1 record(s)" in capsys.readouterr().out
        # Its scan is stale, but the ledger is read again once its producer owns the
        # transactional id: nothing is replayed twice.
        assert stale_replayer.publish(stale.chosen) == 0

        assert raw_ingest_ids(settings) == [REFUSED_ID, UNKNOWN_ID, REFUSED_ID]  # replayed once
        outputs = outputs_through_sentinel(settings)
        accepted = [r for r in outputs if r.topic == settings.topic_accepted]
        assert len(outputs) == 3 and len(accepted) == 1
        record = codec.decode(accepted[0].value)
        assert record["ingest_id"] == REFUSED_ID
        assert record["payload"] == refused
        assert record["connecting_customer_id"] == "trust-1"
        assert accepted[0].header("hl7.replay_of").startswith(f"{settings.topic_deadletter}:0:")

        # A second replay finds the same dead letter in the ledger and publishes nothing.
        assert main(["deadletter", "replay", "--reason", "PARTNER_NOT_AUTHORISED", "--execute", "--yes"]) == 0
        again = capsys.readouterr().out
        assert "0 dead letter(s) match; 1 already replayed" in again
        assert raw_ingest_ids(settings) == [REFUSED_ID, UNKNOWN_ID, REFUSED_ID]
        assert len(outputs_through_sentinel(settings)) == 3
    finally:
        processor.stop()
        worker.join(60)
        watcher.stop()


NEWCO = f"""\
  - id: newco
    active: true
    username: partner_newco
    password_hash: "{PASSWORD_HASH}"
    authorised_by: [trust-1]
"""


def test_replay_filters_by_principal_and_time(
    kafka_bootstrap: str, unique_name, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SPEC 7: dead letters are chosen "by reason, principal, time". Three dead letters that
    the fixed registry accepts: mailco's A1 (before T), newco's N1 (before T), mailco's A2
    (after T). Each filter, left out, would change what is chosen."""
    from datetime import datetime, timezone

    registry_file = tmp_path / "registry.yaml"
    write_atomically(registry_file, registry_text(grant_trust1=False))  # newco unknown, mailco not granted
    settings = stream_settings(kafka_bootstrap, unique_name, registry_file, topic_partitions=1)
    watcher = RegistryWatcher(registry_file, 0.2)
    watcher.start()
    processor = StreamProcessor(settings, watcher)
    worker = threading.Thread(target=processor.run, daemon=True)
    worker.start()
    ids = {
        "A1": "a1a1a1a1-0000-4000-8000-000000000001",
        "N1": "b1b1b1b1-0000-4000-8000-000000000002",
        "A2": "a2a2a2a2-0000-4000-8000-000000000003",
    }
    try:
        produce_raw(settings, [
            RawIn(hl7_message(control_id=b"A1"), raw_headers(ingest_id=ids["A1"])),
            RawIn(hl7_message(control_id=b"N1"), raw_headers("newco", ingest_id=ids["N1"])),
        ])
        assert len(read_outputs(settings, expect=2)) == 2  # both dead-lettered and visible
        time.sleep(0.05)
        boundary = datetime.now(timezone.utc)
        time.sleep(0.05)
        produce_raw(settings, [RawIn(hl7_message(control_id=b"A2"), raw_headers(ingest_id=ids["A2"]))])
        codec = AvroCodec.from_settings(settings, register=False)
        dead = {codec.decode(r.value)["ingest_id"]: codec.decode(r.value) for r in read_outputs(settings, expect=3)}
        assert {dead[i]["reason"] for i in ids.values()} == {"PARTNER_NOT_AUTHORISED", "PRINCIPAL_UNKNOWN"}
        assert dead[ids["N1"]]["principal_id"] == "newco"
        assert dead[ids["A1"]]["dead_lettered_at"] < boundary < dead[ids["A2"]]["dead_lettered_at"]

        old_version = watcher.current.version
        write_atomically(registry_file, registry_text(grant_trust1=True) + NEWCO)
        assert wait_for(lambda: watcher.current.version != old_version, 15)
        _env_for(monkeypatch, settings)
        before, after = ["--until", boundary.isoformat()], ["--since", boundary.isoformat()]

        def dry(*argv: str) -> str:
            assert main(["deadletter", "replay", *argv]) == 0
            return capsys.readouterr().out

        assert "3 dead letter(s) match" in dry()
        assert "2 dead letter(s) match" in dry("--principal", "mailco")
        assert "2 dead letter(s) match" in dry(*before)
        assert "1 dead letter(s) match" in dry(*after)
        assert "1 dead letter(s) match" in dry("--principal", "mailco", *before)
        assert "0 dead letter(s) match" in dry("--principal", "newco", *after)
        originals = [ids["A1"], ids["N1"], ids["A2"]]
        assert raw_ingest_ids(settings) == originals  # the dry runs published nothing

        assert main(["deadletter", "replay", "--principal", "mailco", *before, "--execute", "--yes"]) == 0
        assert "replayed 1 record(s)" in capsys.readouterr().out
        assert raw_ingest_ids(settings) == [*originals, ids["A1"]]
        assert main(["deadletter", "replay", "--principal", "newco", "--execute", "--yes"]) == 0
        assert "replayed 1 record(s)" in capsys.readouterr().out
        assert raw_ingest_ids(settings) == [*originals, ids["A1"], ids["N1"]]

        accepted = [codec.decode(r.value)["ingest_id"] for r in outputs_through_sentinel(settings)
                    if r.topic == settings.topic_accepted]
        assert sorted(accepted) == sorted([ids["A1"], ids["N1"]])  # A2 never chosen, each once
    finally:
        processor.stop()
        worker.join(60)
        watcher.stop()
