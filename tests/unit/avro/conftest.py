"""Fixtures and sample records for the Avro tests (samples are valid per the current schemas).

Tests get the sample builders through fixtures (``make_accepted``, ``make_dead_letter``)
because pytest's import mode here does not put this directory on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processor.avro.codec import AvroCodec
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, AvroSchema, load_schema

SCHEMAS_V1 = Path(__file__).parent / "schemas_v1"
ACCEPTED_TOPIC = "hl7.accepted"
DEADLETTER_TOPIC = "hl7.deadletter"

# 2026-11-27T10:43:44.123456Z
T_RECEIVED = 1_795_776_224_123_456
T_PROCESSED = T_RECEIVED + 1_500


def sample_accepted(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ingest_id": "5b0b7e3c-3d8e-4a55-9a0e-6a1b2c3d4e5f",
        "received_at": T_RECEIVED,
        "processed_at": T_PROCESSED,
        "principal_id": "mailco",
        "principal_type": "PARTNER",
        "connecting_customer_id": "trust-1",
        "connecting_alias": "trustalias",
        "data_controller_id": "trust-1",
        "data_controller_alias": "trustalias",
        "registry_version": "0123456789ab",
        "message_type": "ADT",
        "trigger_event": "A01",
        "message_control_id": "MSG00001",
        "hl7_version": "2.5",
        "sending_application": "PAS",
        "sending_facility": "trustalias{trustalias}",
        "transport": "http",
        "source_ip": "203.0.113.7",
        "source_topic": "hl7.raw",
        "source_partition": 2,
        "source_offset": 12345,
        "payload": b"MSH|^~\\&|PAS|trustalias{trustalias}|||20260101||ADT^A01|MSG00001|P|2.5\r\x00\xff",
        "message_structure": "ADT_A01",
        "message_datetime": "20260101",
        "processing_id": "P",
        "character_set": None,
    }
    record.update(overrides)
    return record


def sample_dead_letter(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ingest_id": "5b0b7e3c-3d8e-4a55-9a0e-6a1b2c3d4e5f",
        "received_at": T_RECEIVED,
        "dead_lettered_at": T_PROCESSED,
        "reason": "PARTNER_NOT_AUTHORISED",
        "detail": "partner mailco is not authorised by customer trust-2",
        "principal_id": "mailco",
        "sending_facility": "otheralias{otheralias}",
        "message_control_id": "MSG00002",
        "registry_version": "0123456789ab",
        "source_topic": "hl7.raw",
        "source_partition": 0,
        "source_offset": 7,
        "headers": {"hl7.principal_id": "mailco", "hl7.transport": "soap"},
        "payload": b"MSH|^~\\&|\r",
        "message_type": "ADT",
        "trigger_event": None,
    }
    record.update(overrides)
    return record


@pytest.fixture
def make_accepted() -> Callable[..., dict[str, Any]]:
    return sample_accepted


@pytest.fixture
def make_dead_letter() -> Callable[..., dict[str, Any]]:
    return sample_dead_letter


@pytest.fixture(scope="session")
def topic_schemas() -> dict[str, AvroSchema]:
    return {ACCEPTED_TOPIC: load_schema(ACCEPTED_MESSAGE), DEADLETTER_TOPIC: load_schema(DEAD_LETTER)}


@pytest.fixture
def codec(topic_schemas: dict[str, AvroSchema]) -> AvroCodec:
    return AvroCodec(topic_schemas)
