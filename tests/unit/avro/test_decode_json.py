"""``hl7-processor decode`` output format: one JSON object per record, bytes as base64."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from processor.avro.codec import AvroCodec
from processor.commands.decode import json_line


def test_json_line_of_decoded_dead_letter(codec: AvroCodec, make_dead_letter: Callable[..., dict[str, Any]]) -> None:
    record = make_dead_letter(payload=b"\x00\xffMSH|", received_at=None)
    decoded = codec.decode(codec.encode("hl7.deadletter", record))
    line = json_line(decoded, partition=3, offset=17, key="mailco|trust\\T\\x{é}".encode())
    assert "\n" not in line
    out = json.loads(line)
    assert base64.b64decode(out["payload"], validate=True) == b"\x00\xffMSH|"
    assert out["dead_lettered_at"] == "2026-11-27T10:43:44.124956Z"
    assert out["received_at"] is None
    assert out["reason"] == "PARTNER_NOT_AUTHORISED"
    assert out["headers"] == record["headers"]
    assert (out["_partition"], out["_offset"], out["_key"]) == (3, 17, "mailco|trust\\T\\x{é}")
    assert list(out)[: len(record)] == list(record)  # schema field order, metadata last


def test_json_line_key_null_and_invalid_utf8(codec: AvroCodec, make_accepted: Callable[..., dict[str, Any]]) -> None:
    decoded = codec.decode(codec.encode("hl7.accepted", make_accepted()))
    assert json.loads(json_line(decoded, partition=0, offset=0, key=None))["_key"] is None
    assert json.loads(json_line(decoded, partition=0, offset=0, key=b"a\xff"))["_key"] == "a\ufffd"
    out = json.loads(json_line(decoded, partition=0, offset=0, key=None))
    assert out["received_at"] == "2026-11-27T10:43:44.123456Z"
    assert out["principal_type"] == "PARTNER"


def test_decode_without_kafka_configured_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from processor.cli import main

    monkeypatch.delenv("HL7_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["decode", "hl7.accepted", "--timeout", "0.1"]) == 2
    assert "HL7_KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err
