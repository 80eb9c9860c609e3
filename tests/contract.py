"""The external contract, transcribed by hand from ``/work/shared/SPEC.md`` (and README where
the SPEC leaves a default to us). Tests compare the CODE and the TESTS against these tables.

Rules for this module:

* Copy from the SPEC text, never import from ``processor``: a table derived from the code
  agrees with the code by construction and can never catch a rename, a missing row or a
  typo in a label value.
* Keep the SPEC's order (tables are tuples); tests compare as sets unless order is contract.
* When the SPEC changes, change this file first, then let the tests say what else must move.
"""

from __future__ import annotations

from typing import NamedTuple

MIB = 1024 * 1024

# --------------------------------------------------------------------------------------------
# SPEC 3: decision table. Row number -> reason code(s). Row 10 has one code per principal type.
# "—" (any unexpected error while handling one record) is PROCESSING_ERROR.

DECISION_ROWS: dict[int, tuple[str, ...]] = {
    1: ("MISSING_METADATA",),
    2: ("PRINCIPAL_UNKNOWN",),
    3: ("PRINCIPAL_NOT_ACTIVE",),
    4: ("MALFORMED_HL7",),
    5: ("MSH4_MISSING",),
    6: ("MSH4_SYNTAX",),
    7: ("UNKNOWN_CONNECTING_ALIAS",),
    8: ("UNKNOWN_DATA_CONTROLLER_ALIAS",),
    9: ("CUSTOMER_NOT_ACTIVE",),
    10: ("PARTNER_NOT_AUTHORISED", "CUSTOMER_ALIAS_MISMATCH"),
    11: ("DELEGATION_NOT_AUTHORISED",),
    12: ("DUPLICATE",),
}
UNEXPECTED_ERROR_REASON = "PROCESSING_ERROR"

#: Every reason code of SPEC 3, in table order (the dead-letter ``reason`` enum holds these).
REASON_CODES: tuple[str, ...] = (
    "MISSING_METADATA",
    "PRINCIPAL_UNKNOWN",
    "PRINCIPAL_NOT_ACTIVE",
    "MALFORMED_HL7",
    "MSH4_MISSING",
    "MSH4_SYNTAX",
    "UNKNOWN_CONNECTING_ALIAS",
    "UNKNOWN_DATA_CONTROLLER_ALIAS",
    "CUSTOMER_NOT_ACTIVE",
    "PARTNER_NOT_AUTHORISED",
    "CUSTOMER_ALIAS_MISMATCH",
    "DELEGATION_NOT_AUTHORISED",
    "DUPLICATE",
    "PROCESSING_ERROR",
)


def reasons_of_rows(first: int, last: int) -> frozenset[str]:
    """The reason codes of decision rows ``first`` .. ``last`` (inclusive)."""
    return frozenset(code for row in range(first, last + 1) for code in DECISION_ROWS[row])


#: Rows the pure decision function evaluates (row 1 is the processor's header check, row 12
#: the processor's dedupe; the edge evaluates rows 4-11).
DECIDE_ROWS = (2, 11)
EDGE_ROWS = (4, 11)

# --------------------------------------------------------------------------------------------
# SPEC 4: HTTP edge.

ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("POST", "/hl7"),
    ("POST", "/soap"),
    ("GET", "/soap?wsdl"),
    ("GET", "/metrics"),
    ("GET", "/livez"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
)
HL7_CONTENT_TYPES = ("application/hl7-v2", "x-application/hl7-v2+er7", "text/plain")
SOAP_NAMESPACE = "http://wsssl.hl7api.patientsknowbest.com/"
WWW_AUTHENTICATE = 'Basic realm="HL7 API"'


class StatusRow(NamedTuple):
    status: int
    when: str
    required_header: str | None  # a reply header the row requires


#: The "HTTP status codes" paragraph of SPEC 4, one row per status.
HTTP_STATUS_ROWS: tuple[StatusRow, ...] = (
    StatusRow(200, "an HL7 ACK is returned", None),
    StatusRow(400, "no MSH segment can be found (nothing stored)", None),
    StatusRow(401, "missing or bad credentials", "WWW-Authenticate"),
    StatusRow(403, "source address outside the principal's allowed_networks", None),
    StatusRow(413, "over the body limit", None),
    StatusRow(415, "other content types", None),
    StatusRow(429, "client or address exceeds the failed-login rate limit", "Retry-After"),
    StatusRow(503, "the message could not be stored (Kafka unreachable or timed out)", "Retry-After"),
)
HTTP_STATUSES: tuple[int, ...] = tuple(row.status for row in HTTP_STATUS_ROWS)

# --------------------------------------------------------------------------------------------
# SPEC 5: Kafka records.

TOPIC_RAW = "hl7.raw"
TOPIC_ACCEPTED = "hl7.accepted"
TOPIC_DEADLETTER = "hl7.deadletter"
TOPICS = (TOPIC_RAW, TOPIC_ACCEPTED, TOPIC_DEADLETTER)

#: Required headers of every hl7.raw record, in the SPEC's order.
RAW_HEADERS: tuple[str, ...] = (
    "hl7.ingest_id",
    "hl7.principal_id",
    "hl7.principal_type",
    "hl7.received_at",
    "hl7.source_ip",
    "hl7.transport",
)
PRINCIPAL_TYPES = ("partner", "customer")
TRANSPORTS = ("http", "soap", "mllp", "gateway")
KEY_MSH4_MAX_BYTES = 256

ACCEPTED_FIELDS: tuple[str, ...] = (
    "ingest_id",
    "received_at",
    "processed_at",
    "principal_id",
    "principal_type",
    "connecting_customer_id",
    "connecting_alias",
    "data_controller_id",
    "data_controller_alias",
    "registry_version",
    "message_type",
    "trigger_event",
    "message_control_id",
    "hl7_version",
    "sending_application",
    "sending_facility",
    "transport",
    "source_ip",
    "source_topic",
    "source_partition",
    "source_offset",
    "payload",
)
ACCEPTED_NULLABLE = frozenset({"trigger_event", "sending_application"})
ACCEPTED_TIMESTAMP_MICROS = frozenset({"received_at", "processed_at"})
ACCEPTED_PRINCIPAL_TYPE_SYMBOLS = ("PARTNER", "CUSTOMER")

DEAD_LETTER_FIELDS: tuple[str, ...] = (
    "ingest_id",
    "received_at",
    "dead_lettered_at",
    "reason",
    "detail",
    "principal_id",
    "sending_facility",
    "message_control_id",
    "registry_version",
    "source_topic",
    "source_partition",
    "source_offset",
    "headers",
    "payload",
)
DEAD_LETTER_NULLABLE = frozenset(
    {"ingest_id", "received_at", "principal_id", "sending_facility", "message_control_id"}
)
DEAD_LETTER_TIMESTAMP_MICROS = frozenset({"received_at", "dead_lettered_at"})

AVRO_FIELDS = {"accepted_message": ACCEPTED_FIELDS, "dead_letter": DEAD_LETTER_FIELDS}
AVRO_NULLABLE = {"accepted_message": ACCEPTED_NULLABLE, "dead_letter": DEAD_LETTER_NULLABLE}
AVRO_TIMESTAMP_MICROS = {
    "accepted_message": ACCEPTED_TIMESTAMP_MICROS,
    "dead_letter": DEAD_LETTER_TIMESTAMP_MICROS,
}

# --------------------------------------------------------------------------------------------
# SPEC 6: metrics. labels = the label names the SPEC requires; optional_labels = names the
# SPEC allows in addition; values = the label values the SPEC enumerates (a label without an
# entry has open values: `status` is any HTTP code, `reason` of records_total a reason code).

ACK_CODES = ("AA", "AR", "AE", "CA", "CR", "CE", "none")
AUTH_FAILURE_REASONS = (
    "bad_credentials",
    "missing_credentials",
    "network_not_allowed",
    "rate_limited",
    "unknown_certificate",
    "tls_handshake",
)
OUTCOMES = ("accepted", "deadletter")
TRANSACTION_RESULTS = ("committed", "aborted")
RELOAD_RESULTS = ("ok", "error")


class MetricRow(NamedTuple):
    name: str
    type: str  # prometheus_client's family type: counter, gauge, histogram
    labels: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    optional_labels: tuple[str, ...] = ()


METRICS: tuple[MetricRow, ...] = (
    MetricRow(
        "hl7_edge_requests_total", "counter", ("transport", "status", "ack"), {"ack": ACK_CODES}
    ),
    MetricRow(
        "hl7_edge_auth_failures_total", "counter", ("reason",), {"reason": AUTH_FAILURE_REASONS}
    ),
    MetricRow("hl7_edge_request_duration_seconds", "histogram", ("transport",), {}),
    MetricRow("hl7_edge_publish_duration_seconds", "histogram", (), {}),
    MetricRow(
        "hl7_processor_records_total", "counter", ("outcome", "reason"),
        {"outcome": OUTCOMES}, optional_labels=("principal",),
    ),
    MetricRow(
        "hl7_processor_transactions_total", "counter", ("result",), {"result": TRANSACTION_RESULTS}
    ),
    MetricRow("hl7_processor_end_to_end_seconds", "histogram", (), {}),
    MetricRow("hl7_processor_consumer_lag", "gauge", ("partition",), {}),
    MetricRow("hl7_registry_reloads_total", "counter", ("result",), {"result": RELOAD_RESULTS}),
    MetricRow("hl7_registry_info", "gauge", ("version",), {}),
    MetricRow("hl7_edge_mllp_connections", "gauge", (), {}),
    MetricRow("hl7_processor_control_id_reused_total", "counter", ("principal",), {}),
)
METRICS_BY_NAME = {row.name: row for row in METRICS}

#: Label values only MLLP with TLS client certificates produces (SPEC 4a), never HTTP.
MLLP_ONLY_LABEL_VALUES = {
    ("hl7_edge_auth_failures_total", "reason"): frozenset({"unknown_certificate", "tls_handshake"}),
}

# --------------------------------------------------------------------------------------------
# SPEC 7: command line and configuration.

CONSOLE_COMMAND = "hl7-processor"
#: Every command line of the SPEC 7 table, as argv after ``hl7-processor``.
CLI_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("run",),
    ("edge",),
    ("stream",),
    ("kafka",),
    ("topics", "create"),
    ("explain",),
    ("registry", "hash-password"),
    ("registry", "check"),
    ("decode",),
    ("deadletter", "replay"),
)
EXPLAIN_OPTIONS = ("--registry", "--principal")
EXPLAIN_JSON_KEYS = (
    "decision", "reason", "connecting_customer_id", "data_controller_id", "message_control_id",
    "registry_version",
)
#: Filters of ``deadletter replay``: by reason, principal, time.
REPLAY_FILTER_OPTIONS = ("--reason", "--principal", "--since", "--until")

#: Environment variables SPEC 7 names (all must be settings).
ENV_VARS = (
    "HL7_KAFKA_BOOTSTRAP_SERVERS",
    "HL7_REGISTRY_FILE",
    "HL7_EDGE_HOST",
    "HL7_EDGE_PORT",
    "HL7_METRICS_PORT",
    "HL7_TOPIC_RAW",
    "HL7_TOPIC_ACCEPTED",
    "HL7_TOPIC_DEADLETTER",
    "HL7_SCHEMA_REGISTRY_URL",
    "HL7_MAX_BODY_BYTES",
    "HL7_TRUSTED_PROXIES",
    "HL7_CONSUMER_GROUP",
)
#: Defaults SPEC 7 states (plus SPEC 5's topic names), by environment variable.
DEFAULTS: dict[str, object] = {
    "HL7_EDGE_PORT": 8080,
    "HL7_METRICS_PORT": 9464,
    "HL7_MAX_BODY_BYTES": 10 * MIB,
    "HL7_CONSUMER_GROUP": "hl7-processor",
    "HL7_TOPIC_RAW": TOPIC_RAW,
    "HL7_TOPIC_ACCEPTED": TOPIC_ACCEPTED,
    "HL7_TOPIC_DEADLETTER": TOPIC_DEADLETTER,
}
#: Defaults the SPEC leaves to us and README documents ("HL7_REGISTRY_RELOAD_SECONDS | 2").
README_DEFAULTS: dict[str, object] = {
    "HL7_REGISTRY_RELOAD_SECONDS": 2.0,
    "HL7_MLLP_IDLE_SECONDS": 300.0,
}
#: The demo registry of ``run`` (SPEC 7): the seed's partner login, for trustalias.
DEMO_LOGIN = ("partner_mailco", "testing")
DEMO_ALIAS = "trustalias"
