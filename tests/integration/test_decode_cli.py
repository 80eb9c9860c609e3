"""``hl7-processor decode`` against a real broker: committed Avro records become JSON lines."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor.avro.codec import AvroCodec
from processor.avro.records import dead_letter_record
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema
from processor.cli import main as cli_main
from processor.raw import RawRecord
from processor.reasons import Reason

pytestmark = pytest.mark.kafka


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)


def _dead_letter(
    offset: int, payload: bytes, *, reason: Reason = Reason.MALFORMED_HL7, principal: str = "mailco"
) -> dict[str, object]:
    raw = RawRecord(
        topic="hl7.raw",
        partition=1,
        offset=offset,
        key=b"mailco|trustalias{trustalias}",
        value=payload,
        headers={"hl7.principal_id": principal, "hl7.received_at": "1795776224123456", "hl7.transport": "http"},
    )
    return dead_letter_record(
        reason=reason,
        detail="no MSH segment",
        raw=raw,
        dead_lettered_at_us=1_795_776_225_000_001,
        registry_version="0123456789ab",
        header=None,
    )


def test_decode_prints_committed_records_as_json_lines(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("hl7.deadletter")
    _create_topic(kafka_bootstrap, topic)
    codec = AvroCodec({topic: load_schema(DEAD_LETTER), "unused": load_schema(ACCEPTED_MESSAGE)})
    payloads = {0: b"\x00\xff not hl7 \r", 1: b"MSH?" + bytes(range(256))}

    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("tx"), "enable.idempotence": True}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for offset, payload in payloads.items():
        producer.produce(topic, key=b"mailco|trustalias{trustalias}",
                         value=codec.encode(topic, _dead_letter(offset, payload)), partition=0)
    producer.commit_transaction(30)
    # An aborted transaction must stay invisible to the read_committed decoder.
    producer.begin_transaction()
    producer.produce(topic, value=codec.encode(topic, _dead_letter(99, b"aborted")), partition=1)
    producer.abort_transaction(30)

    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    status = cli_main(["decode", topic, "--max", "3", "--timeout", "6"])
    captured = capsys.readouterr()
    assert status == 0, captured.err

    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == 2
    assert [line["source_offset"] for line in lines] == [0, 1]
    for line in lines:
        assert base64.b64decode(line["payload"], validate=True) == payloads[line["source_offset"]]
        assert line["reason"] == "MALFORMED_HL7"
        assert line["detail"] == "no MSH segment"
        assert line["principal_id"] == "mailco"
        assert line["ingest_id"] is None
        assert line["received_at"] == "2026-11-27T10:43:44.123456Z"
        assert line["dead_lettered_at"] == "2026-11-27T10:43:45.000001Z"
        assert line["headers"]["hl7.transport"] == "http"
        assert line["_partition"] == 0
        assert line["_key"] == "mailco|trustalias{trustalias}"
    assert [line["_offset"] for line in lines] == [0, 1]


def test_decode_reports_undecodable_values_and_fails(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("hl7.accepted")
    _create_topic(kafka_bootstrap, topic)
    codec = AvroCodec({topic: load_schema(DEAD_LETTER)})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, value=b"MSH|^~\\&|raw hl7, not avro", partition=0)
    producer.produce(topic, value=codec.encode(topic, _dead_letter(5, b"ok")), partition=0)
    assert producer.flush(30) == 0

    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    status = cli_main(["decode", topic, "--max", "2", "--timeout", "8"])
    captured = capsys.readouterr()
    assert status == 1
    assert "offset 0" in captured.err and "neither Avro" in captured.err
    assert "raw hl7" not in captured.err  # the value itself is never echoed
    (line,) = [json.loads(x) for x in captured.out.splitlines()]
    assert line["_offset"] == 1 and base64.b64decode(line["payload"]) == b"ok"


# --- operator options: --no-payload, --follow, --since, --partition/--offset, filters ------------

ROOT = Path(__file__).resolve().parents[2]


def _dead_letter_topic(
    bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, AvroCodec]:
    topic = unique_name("hl7.deadletter")
    _create_topic(bootstrap, topic)
    monkeypatch.setenv("HL7_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    return topic, AvroCodec({topic: load_schema(DEAD_LETTER)})


def _produce(bootstrap: str, topic: str, codec: AvroCodec,
             records: list[tuple[int, dict[str, object], int | None]]) -> None:
    """``(partition, dead letter, timestamp in ms or None)`` in order, then flush."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, record, timestamp in records:
        extra = {"timestamp": timestamp} if timestamp is not None else {}
        producer.produce(topic, value=codec.encode(topic, record), partition=partition, **extra)
    assert producer.flush(30) == 0


def _decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]], str]:
    status = cli_main(["decode", *argv])
    captured = capsys.readouterr()
    return status, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_no_payload_leaves_only_the_payload_out(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    _produce(kafka_bootstrap, topic, codec, [(0, _dead_letter(n, b"PID|secret patient " + bytes([n])), None)
                                             for n in range(2)])
    status, full, _ = _decode(capsys, topic, "--max", "2", "--timeout", "6")
    assert status == 0 and len(full) == 2
    status = cli_main(["decode", topic, "--max", "2", "--timeout", "6", "--no-payload"])
    out = capsys.readouterr().out
    assert status == 0 and "payload" not in out
    without = [json.loads(line) for line in out.splitlines()]
    for line, reference in zip(without, full, strict=True):
        expected = {k: v for k, v in reference.items() if k != "payload"}
        assert list(line) == list(expected)  # same fields, same order
        assert line == expected


def test_since_starts_at_the_first_record_at_or_after_the_time(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    old_ms = int((now - timedelta(hours=3)).timestamp() * 1000)
    new_ms = int((now - timedelta(hours=1)).timestamp() * 1000)
    _produce(kafka_bootstrap, topic, codec, [
        (0, _dead_letter(0, b"old"), old_ms),
        (0, _dead_letter(1, b"new"), new_ms),
        (0, _dead_letter(2, b"new"), new_ms + 1),
        (1, _dead_letter(3, b"old"), old_ms),  # partition 1 has nothing that new
    ])
    cut = now - timedelta(hours=2)
    for since in (cut.isoformat(), cut.strftime("%Y-%m-%dT%H:%M:%SZ"), str(int(cut.timestamp())),
                  cut.replace(tzinfo=None).isoformat()):
        status, lines, err = _decode(capsys, topic, "--since", since, "--timeout", "3")
        assert status == 0, err
        assert [(line["_partition"], line["_offset"]) for line in lines] == [(0, 1), (0, 2)], since
    status, lines, _ = _decode(capsys, topic, "--since", str(int(now.timestamp()) + 60), "--timeout", "3")
    assert status == 0 and lines == []
    status, lines, _ = _decode(capsys, topic, "--since", "1970-01-01", "--timeout", "3")
    assert status == 0 and len(lines) == 4
    status, lines, err = _decode(capsys, topic, "--since", "last tuesday")
    assert status == 2 and lines == [] and "--since" in err


def test_partition_and_offset_choose_where_to_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    _produce(kafka_bootstrap, topic, codec,
             [(0, _dead_letter(n, b"p0"), None) for n in range(3)]
             + [(1, _dead_letter(10 + n, b"p1"), None) for n in range(2)])

    status, lines, _ = _decode(capsys, topic, "--partition", "0", "--offset", "1", "--timeout", "3")
    assert status == 0
    assert [(line["_partition"], line["_offset"], line["source_offset"]) for line in lines] == [(0, 1, 1), (0, 2, 2)]
    status, lines, _ = _decode(capsys, topic, "--partition", "1", "--timeout", "3")
    assert status == 0 and [(line["_partition"], line["_offset"]) for line in lines] == [(1, 0), (1, 1)]
    status, lines, _ = _decode(capsys, topic, "--partition", "1", "--offset", "2", "--timeout", "3")
    assert status == 0 and lines == []  # at the end: nothing yet

    for argv, text in [
        (("--offset", "1"), "--offset needs --partition"),
        (("--partition", "7"), "no partition 7"),
        (("--partition", "0", "--offset", "99"), "beyond the end"),
        (("--partition", "0", "--offset", "1", "--since", "2026-01-01"), "not both"),
    ]:
        status, lines, err = _decode(capsys, topic, *argv)
        assert status == 2 and lines == [], argv
        assert text in err and len(err.strip().splitlines()) == 1, err


def test_reason_and_principal_filters(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    rows = [(Reason.MALFORMED_HL7, "mailco"), (Reason.PARTNER_NOT_AUTHORISED, "mailco"),
            (Reason.PARTNER_NOT_AUTHORISED, "gp1"), (Reason.MSH4_SYNTAX, "gp1")]
    _produce(kafka_bootstrap, topic, codec, [
        (0, _dead_letter(n, b"x", reason=reason, principal=principal), None)
        for n, (reason, principal) in enumerate(rows)
    ])

    def offsets(*argv: str) -> list[int]:
        status, lines, err = _decode(capsys, topic, "--timeout", "3", *argv)
        assert status == 0, err
        return [int(line["_offset"]) for line in lines]  # type: ignore[call-overload]

    assert offsets("--reason", "PARTNER_NOT_AUTHORISED", "--reason", "MSH4_SYNTAX") == [1, 2, 3]
    assert offsets("--principal", "gp1") == [2, 3]
    assert offsets("--principal", "gp1", "--principal", "mailco") == [0, 1, 2, 3]
    assert offsets("--reason", "PARTNER_NOT_AUTHORISED", "--principal", "gp1") == [2]
    assert offsets("--reason", "PARTNER_NOT_AUTHORISED", "--max", "1") == [1]  # --max counts printed lines
    assert offsets("--principal", "nobody") == []

    status, lines, err = _decode(capsys, topic, "--reason", "NOT_A_REASON")
    assert status == 2 and lines == [] and "NOT_A_REASON" in err
    monkeypatch.setenv("HL7_TOPIC_ACCEPTED", topic)  # --reason on the accepted topic makes no sense
    status, lines, err = _decode(capsys, topic, "--reason", "MALFORMED_HL7")
    assert status == 2 and "dead letters" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(
    kafka_bootstrap: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from processor.commands import decode as decode_command

    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    _produce(kafka_bootstrap, topic, codec, [(0, _dead_letter(n, b"x"), None) for n in range(3)])
    monkeypatch.setattr(decode_command, "_PROGRESS_DELAY_SECONDS", 0.0)  # "long" read at once

    status, lines, err = _decode(capsys, topic, "--timeout", "3")
    assert status == 0 and len(lines) == 3 and "decoding" not in err  # stderr is not a terminal

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status = cli_main(["decode", topic, "--timeout", "3"])
    out = capsys.readouterr().out
    assert status == 0 and len(out.splitlines()) == 3
    assert f"decoding {topic}" in terminal.getvalue() and "/3 [" in terminal.getvalue()  # of 3 records
    assert "decoding" not in out  # the JSON lines stay clean


def _lines_of(stream: io.TextIOBase) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_follow_prints_new_records_until_a_signal_then_exits_0(
    stop_signal: signal.Signals, kafka_bootstrap: str, unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, codec = _dead_letter_topic(kafka_bootstrap, unique_name, monkeypatch)
    _produce(kafka_bootstrap, topic, codec, [(0, _dead_letter(0, b"first"), None)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "decode", topic, "--follow", "--timeout", "1", "--no-payload"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "HL7_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = _lines_of(proc.stdout)
        first = json.loads(lines.get(timeout=60))
        assert first["source_offset"] == 0 and "payload" not in first
        time.sleep(2.5)  # longer than --timeout: --follow does not stop when idle
        assert proc.poll() is None
        _produce(kafka_bootstrap, topic, codec, [(1, _dead_letter(1, b"second"), None)])
        second = json.loads(lines.get(timeout=30))
        assert second["source_offset"] == 1 and second["_partition"] == 1
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
