"""Routing's side of row 12: the identity an accepted output carries, the DUPLICATE dead letter."""

from __future__ import annotations

from processor.reasons import Reason
from processor.stream.dedupe import Original, identity
from processor.stream.routing import duplicate_dead_letter, route
from tests.unit.stream.test_routing import (
    CODEC,
    NOW_US,
    RECEIVED_US,
    REGISTRY,
    TOPICS,
    independent_decode,
    kafka_headers,
    message,
    raw,
)

ORIGINAL = Original("11111111-2222-4333-8444-555555555555", RECEIVED_US - 5, 2, 417)


def _route(payload: bytes, dedupe: bool):
    headers = kafka_headers()
    return route(raw(payload, headers), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode,
                 kafka_headers=headers, dedupe=dedupe)


def test_accepted_output_carries_the_row_12_identity_only_with_dedupe_on() -> None:
    payload = message(control_id=b"CTRL0042")
    off, on = _route(payload, False), _route(payload, True)
    assert off.identity is None and off.header is None and off.value == on.value
    assert on.identity == identity("mailco", "trustalias{trustalias}", "CTRL0042", payload,
                                   received_at_us=RECEIVED_US, ingest_id="0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11")
    assert on.header is not None and on.header.message_control_id == "CTRL0042"


def test_rejected_output_carries_no_identity() -> None:
    out = _route(message(b"nosuch{trustalias}"), True)
    assert out.outcome == "deadletter" and out.identity is None


def test_duplicate_dead_letter_names_the_original_and_nothing_of_the_message() -> None:
    payload = message(control_id=b"SECRET-CTRL")
    accepted = _route(payload, True)
    headers = kafka_headers()
    out = duplicate_dead_letter(raw(payload, headers), REGISTRY, original=ORIGINAL, header=accepted.header,
                                now_us=NOW_US, topics=TOPICS, encode=CODEC.encode, kafka_headers=headers)
    assert (out.outcome, out.topic, out.reason) == ("deadletter", TOPICS.deadletter, Reason.DUPLICATE)
    assert out.headers == headers and out.principal == "mailco"
    record = independent_decode(out.value, "dead_letter.avsc")
    assert record["reason"] == "DUPLICATE"
    assert record["message_control_id"] == "SECRET-CTRL" and record["payload"] == payload
    assert ORIGINAL.ingest_id in record["detail"]
    assert "out.accepted partition 2 offset 417" in record["detail"]
    assert "SECRET" not in record["detail"] and "trustalias" not in record["detail"]
