"""Pure routing: one raw record -> exactly one encoded output record (no Kafka)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.avro.codec import AvroCodec
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema
from processor.raw import RawRecord, decode_headers
from processor.reasons import Reason
from processor.registry.loader import parse_registry
from processor.stream.routing import (
    OVERSIZE_DETAIL,
    UNKNOWN_PRINCIPAL,
    Topics,
    metadata_problem,
    oversize_dead_letter,
    route,
)
from tests import contract
from tests.builders import hl7_message, registry_text

REGISTRY = parse_registry(registry_text().encode())
TOPICS = Topics(accepted="out.accepted", deadletter="out.deadletter")
CODEC = AvroCodec(
    {TOPICS.accepted: load_schema(ACCEPTED_MESSAGE), TOPICS.deadletter: load_schema(DEAD_LETTER)}
)
NOW_US = 1_767_225_600_000_000
RECEIVED_US = 1_767_225_599_000_000
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


def message(msh4: bytes = b"trustalias{trustalias}", control_id: bytes = b"CTRL0001") -> bytes:
    return hl7_message(msh4, control_id, kind="PID")


def kafka_headers(principal: str = "mailco", ptype: str = "partner", **override: bytes | None):
    base = {
        "hl7.ingest_id": b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11",
        "hl7.principal_id": principal.encode(),
        "hl7.principal_type": ptype.encode(),
        "hl7.received_at": str(RECEIVED_US).encode(),
        "hl7.source_ip": b"203.0.113.7",
        "hl7.transport": b"http",
    }
    for name, value in override.items():
        key = "hl7." + name
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return list(base.items())


def raw(payload: bytes, headers, *, key: bytes | None = b"mailco|trustalias{trustalias}") -> RawRecord:
    return RawRecord("in.raw", 4, 1234, key, payload, decode_headers(headers))


def do_route(payload: bytes, headers=None, encode=CODEC.encode, **kw):
    headers = kafka_headers(**kw) if headers is None else headers
    return route(raw(payload, headers), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=encode,
                 kafka_headers=headers)


def independent_decode(value: bytes, schema_file: str) -> dict:
    """Decode with fastavro and the .avsc file, skipping the 10-byte single-object header."""
    assert value[:2] == b"\xc3\x01"
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / schema_file).read_text()))
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)


CASES: list[tuple[Reason, dict]] = [
    (Reason.MISSING_METADATA, {"headers": kafka_headers(transport=None)}),
    (Reason.PRINCIPAL_UNKNOWN, {"principal": "nobody"}),
    (Reason.PRINCIPAL_NOT_ACTIVE, {"principal": "sleepy"}),
    (Reason.MALFORMED_HL7, {"payload": b"\x00\xff\xfe binary junk"}),
    (Reason.MSH4_MISSING, {"payload": message(b"")}),
    (Reason.MSH4_SYNTAX, {"payload": message(b"trust alias{x")}),
    (Reason.UNKNOWN_CONNECTING_ALIAS, {"payload": message(b"nosuch{trustalias}")}),
    (Reason.UNKNOWN_DATA_CONTROLLER_ALIAS, {"payload": message(b"trustalias{nosuch}")}),
    (Reason.CUSTOMER_NOT_ACTIVE, {"payload": message(b"offalias{offalias}")}),
    (Reason.PARTNER_NOT_AUTHORISED, {"payload": message(b"otheralias{otheralias}")}),
    (Reason.CUSTOMER_ALIAS_MISMATCH, {"principal": "cust-login", "ptype": "customer"}),
    (Reason.DELEGATION_NOT_AUTHORISED, {"payload": message(b"trustalias{otheralias}")}),
]


def _failing_encoder(topic: str, record: dict) -> bytes:
    if topic == TOPICS.accepted:
        raise ValueError("simulated Avro failure")
    return CODEC.encode(topic, record)


def test_every_reason_code_is_covered() -> None:
    """CASES (+ the PROCESSING_ERROR tests below) reach every reason code of SPEC 3 rows 1-11
    and "any unexpected error", as transcribed in tests/contract.py. Row 12 (DUPLICATE) needs
    the processor's dedupe state, which a pure route() of one record cannot hold."""
    covered = {reason.value for reason, _ in CASES} | {Reason.PROCESSING_ERROR.value}
    assert covered == contract.reasons_of_rows(1, 11) | {contract.UNEXPECTED_ERROR_REASON}


@pytest.mark.parametrize(("reason", "case"), CASES, ids=[r.value for r, _ in CASES])
def test_reason_reachable(reason: Reason, case: dict) -> None:
    payload = case.get("payload", message())
    kw = {k: v for k, v in case.items() if k in ("principal", "ptype")}
    out = do_route(payload, case.get("headers"), **kw)
    assert out.outcome == "deadletter"
    assert out.topic == TOPICS.deadletter
    assert out.reason is reason
    decoded = independent_decode(out.value, "dead_letter.avsc")
    assert decoded["reason"] == reason.value
    assert decoded["payload"] == payload


def test_processing_error_when_accepted_record_fails_to_encode() -> None:
    out = do_route(message(), encode=_failing_encoder)
    assert (out.outcome, out.reason) == ("deadletter", Reason.PROCESSING_ERROR)
    decoded = CODEC.decode(out.value)
    assert decoded["reason"] == "PROCESSING_ERROR"
    assert "simulated" not in decoded["detail"]  # type name only, never exception text
    assert decoded["message_control_id"] == "CTRL0001"


def test_processing_error_when_dead_letter_fails_to_encode_first_time() -> None:
    calls = {"n": 0}

    def flaky(topic: str, record: dict) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first dead letter fails")
        return CODEC.encode(topic, record)

    out = do_route(message(b"nosuch{trustalias}"), encode=flaky)
    assert out.reason is Reason.PROCESSING_ERROR
    decoded = CODEC.decode(out.value)
    assert decoded["payload"] == message(b"nosuch{trustalias}")
    assert decoded["source_offset"] == 1234


def test_accepted_provenance() -> None:
    payload = message(b"conalias{trustalias}")
    headers = kafka_headers()
    out = do_route(payload, headers)
    assert out.outcome == "accepted" and out.reason is None and out.topic == TOPICS.accepted
    assert out.key == b"mailco|trustalias{trustalias}"
    assert out.headers == headers  # carried over byte for byte
    assert out.principal == "mailco"
    rec = independent_decode(out.value, "accepted_message.avsc")
    assert rec["payload"] == payload
    assert rec["source_topic"] == "in.raw"
    assert rec["source_partition"] == 4
    assert rec["source_offset"] == 1234
    assert rec["registry_version"] == REGISTRY.version
    assert rec["connecting_customer_id"] == "trust-3"
    assert rec["data_controller_id"] == "trust-1"
    assert rec["sending_facility"] == "conalias{trustalias}"
    assert rec["message_control_id"] == "CTRL0001"
    assert rec["principal_type"] == "PARTNER"
    assert rec["transport"] == "http"
    # fastavro returns timestamp-micros as aware datetimes
    assert int(rec["processed_at"].timestamp() * 1_000_000) == NOW_US
    assert int(rec["received_at"].timestamp() * 1_000_000) == RECEIVED_US


def test_dead_letter_provenance() -> None:
    payload = message(b"nosuch{trustalias}", b"CTRL0042")
    headers = kafka_headers()
    out = do_route(payload, headers)
    rec = independent_decode(out.value, "dead_letter.avsc")
    assert rec["reason"] == "UNKNOWN_CONNECTING_ALIAS"
    assert rec["source_topic"] == "in.raw" and rec["source_partition"] == 4
    assert rec["source_offset"] == 1234
    assert rec["registry_version"] == REGISTRY.version
    assert rec["principal_id"] == "mailco"
    assert rec["message_control_id"] == "CTRL0042"
    assert rec["sending_facility"] == "nosuch{trustalias}"
    assert rec["headers"] == {k: v.decode() for k, v in headers}
    assert int(rec["dead_lettered_at"].timestamp() * 1_000_000) == NOW_US
    assert out.headers == headers and out.key == b"mailco|trustalias{trustalias}"


@pytest.mark.parametrize(
    "override",
    [
        {"ingest_id": None}, {"principal_id": None}, {"principal_type": None},
        {"received_at": None}, {"source_ip": None}, {"transport": None},
        {"ingest_id": b""}, {"received_at": b"yesterday"}, {"received_at": b"1.5e15"},
        {"received_at": b"99999999999999999999999"}, {"principal_type": b"PARTNER"},
        {"principal_type": b"robot"}, {"transport": b"ftp"},
        {"ingest_id": b"not-a-uuid"}, {"source_ip": b"<script>"}, {"source_ip": b""},
    ],
)
def test_missing_or_malformed_metadata(override: dict) -> None:
    headers = kafka_headers(**override)
    out = do_route(message(), headers)
    assert out.reason is Reason.MISSING_METADATA
    rec = CODEC.decode(out.value)
    # details name headers, never their values
    for value in override.values():
        if value:
            assert value.decode() not in rec["detail"]


def test_no_headers_at_all() -> None:
    out = route(raw(message(), None), REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode,
                kafka_headers=None)
    assert out.reason is Reason.MISSING_METADATA
    assert metadata_problem(raw(message(), None)) is not None


def test_unknown_principal_label_is_bounded() -> None:
    out = do_route(message(), principal="attacker-chosen-id-123")
    assert out.principal == UNKNOWN_PRINCIPAL
    assert do_route(message()).principal == "mailco"


def test_oversize_dead_letter_is_small_and_names_source() -> None:
    big = message() + b"NTE|1||" + b"x" * 100_000 + b"\r"
    r = raw(big, kafka_headers())
    out = oversize_dead_letter(r, REGISTRY, now_us=NOW_US, topics=TOPICS, encode=CODEC.encode,
                               kafka_headers=kafka_headers())
    assert out.reason is Reason.PROCESSING_ERROR and out.detail == OVERSIZE_DETAIL
    assert len(out.value) < 2_000
    rec = CODEC.decode(out.value)
    assert rec["source_offset"] == 1234 and rec["payload"] == b""


header_values = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from(
    [b"mailco", b"partner", b"customer", b"http", b"gateway", b"1767225599000000", b"cust-login"]))
header_names = st.sampled_from(
    ["hl7.ingest_id", "hl7.principal_id", "hl7.principal_type", "hl7.received_at",
     "hl7.source_ip", "hl7.transport", "x-other"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.one_of(st.binary(max_size=300), st.builds(message, st.binary(max_size=30))),
    headers=st.lists(st.tuples(header_names, header_values), max_size=10),
    key=st.one_of(st.none(), st.binary(max_size=30)),
)
def test_route_never_raises_and_keeps_payload(payload: bytes, headers, key) -> None:
    out = route(raw(payload, headers, key=key), REGISTRY, now_us=NOW_US, topics=TOPICS,
                encode=CODEC.encode, kafka_headers=headers)
    assert out.outcome in ("accepted", "deadletter")
    assert out.key == key and out.headers == headers
    assert CODEC.decode(out.value)["payload"] == payload
    assert out.principal in ("unknown", "mailco", "sleepy", "cust-login", "trust-1", "trust-2",
                             "trust-3", "trust-off")


# --------------------------------------------------------------- row 1 as amended (SPEC 3)


def _detail_of(headers) -> str:
    out = do_route(message(), headers)
    assert out.outcome == "deadletter" and out.reason is Reason.MISSING_METADATA
    detail = CODEC.decode(out.value)["detail"]
    assert detail == out.detail
    return detail


@pytest.mark.parametrize(
    "name",
    ["hl7.ingest_id", "hl7.principal_id", "hl7.principal_type", "hl7.received_at", "hl7.source_ip",
     "hl7.transport"],
)
def test_required_header_present_twice_is_missing_metadata(name: str) -> None:
    headers = kafka_headers()
    value = dict(headers)[name]
    for twice in ([*headers, (name, value)], [(name, value), *headers]):  # same value, either order
        assert _detail_of(twice) == f"header {name} is present more than once"
    out = do_route(message(), [*headers, (name, value)])
    assert out.headers == [*headers, (name, value)]  # carried over as read, both copies


def test_principal_id_twice_with_different_values_quotes_neither() -> None:
    headers = [*kafka_headers(), ("hl7.principal_id", b"attacker-secret")]
    detail = _detail_of(headers)
    assert detail == "header hl7.principal_id is present more than once"
    assert "mailco" not in detail and "attacker-secret" not in detail


def test_every_problem_is_named() -> None:
    headers = [*kafka_headers(ingest_id=b"nope", source_ip=b"<script>", transport=None),
               ("hl7.principal_type", b"partner")]
    assert _detail_of(headers) == (
        "missing header(s): hl7.transport; header hl7.principal_type is present more than once; "
        "header hl7.ingest_id is not a UUID (8-4-4-4-12 hex digits); header hl7.source_ip is not an IP address"
    )


def test_other_header_twice_is_not_row_1() -> None:
    headers = [*kafka_headers(), ("x-trace", b"a"), ("x-trace", b"b")]
    assert do_route(message(), headers).outcome == "accepted"


@pytest.mark.parametrize(
    "ingest_id",
    [
        b"not-a-uuid",
        b"0b9c1f9e8d4e4d559f653f1e1f3b7a11",  # no hyphens (uuid.UUID takes it; not canonical)
        b"{0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11}",
        b"urn:uuid:0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11",
        b" 0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11",
        b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11\n",
        b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a1g",
        b"0b9c1f9e-8d4e-4d55-9f653-f1e1f3b7a11",
        b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a111",
        "0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a1\u0661".encode(),  # an Arabic-Indic digit
        b"<script>alert(1)</script>",
    ],
)
def test_ingest_id_not_a_uuid_is_missing_metadata(ingest_id: bytes) -> None:
    detail = _detail_of(kafka_headers(ingest_id=ingest_id))
    assert detail == "header hl7.ingest_id is not a UUID (8-4-4-4-12 hex digits)"


@pytest.mark.parametrize(
    "ingest_id",
    [b"0B9C1F9E-8D4E-4D55-9F65-3F1E1F3B7A11", b"00000000-0000-0000-0000-000000000000",
     b"0b9c1f9e-8d4e-1d55-7f65-3f1e1f3b7a11"],  # upper case, nil, any version / variant
)
def test_canonical_uuid_in_either_case_is_accepted(ingest_id: bytes) -> None:
    assert do_route(message(), kafka_headers(ingest_id=ingest_id)).outcome == "accepted"


@pytest.mark.parametrize(
    "source_ip",
    [b"<script>", b"<script>alert(1)</script>", b"203.0.113", b"203.0.113.256", b"203.0.113.07",
     b" 203.0.113.7", b"203.0.113.7:443", b"example.org", b"testclient", b"fe80::1%<script>",
     b"fe80::1%", b"2001:db8::1" + b"0" * 100, b"1" * 100_000],
)
def test_source_ip_not_an_address_is_missing_metadata(source_ip: bytes) -> None:
    detail = _detail_of(kafka_headers(source_ip=source_ip))
    assert detail == "header hl7.source_ip is not an IP address"


@pytest.mark.parametrize(
    "source_ip",
    [b"203.0.113.7", b"2001:db8::1", b"2001:DB8:0:0:0:0:0:1", b"::1", b"::ffff:192.0.2.1", b"fe80::1%eth0",
     b"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"],
)
def test_ipv4_and_ipv6_source_ip_accepted(source_ip: bytes) -> None:
    for _ in range(2):  # the second time from the cache of known addresses
        out = do_route(message(), kafka_headers(source_ip=source_ip))
        assert out.outcome == "accepted", out.detail
        assert independent_decode(out.value, "accepted_message.avsc")["source_ip"] == source_ip.decode()


def test_mllp_transport_is_accepted() -> None:
    """SPEC 5 / 4a: raw records from the MLLP listener carry hl7.transport = mllp."""
    assert do_route(message(), kafka_headers(transport=b"mllp")).outcome == "accepted"
