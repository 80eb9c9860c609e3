"""Every Prometheus metric of the gateway, defined once (SPEC section 6).

Edge and processor may share one process (``hl7-processor run``), so all
metrics live on the default registry here and modules import what they use.
Labels are bounded: HTTP codes, ACK codes, reason codes, registry ids and
partition numbers; never aliases from unauthenticated input, nor message ids.
"""

from prometheus_client import Counter, Gauge, Histogram, Info

from processor import __version__

__all__ = [
    "EDGE_REQUESTS",
    "EDGE_AUTH_FAILURES",
    "EDGE_REQUEST_DURATION",
    "EDGE_PUBLISH_DURATION",
    "EDGE_LIMIT_REFUSALS",
    "EDGE_OPEN_CONNECTIONS",
    "EDGE_MLLP_CONNECTIONS",
    "PROCESSOR_RECORDS",
    "PROCESSOR_TRANSACTIONS",
    "PROCESSOR_END_TO_END",
    "PROCESSOR_CONSUMER_LAG",
    "PROCESSOR_CONTROL_ID_REUSED",
    "PROCESSOR_DEDUPE_EVICTIONS",
    "PROCESSOR_DEDUPE_ENTRIES",
    "PROCESSOR_DEDUPE_RESTORE",
    "REGISTRY_RELOADS",
    "REGISTRY_INFO",
    "REGISTRY_FILE_LOADED",
    "REGISTRY_LAST_SUCCESS",
    "BUILD_INFO",
]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# A whole request can take minutes (a 10 MiB body at the minimum body rate, a slow client):
# without buckets above 30 s every such request would sit in +Inf.
_REQUEST_BUCKETS = _LATENCY_BUCKETS + (60.0, 120.0, 300.0)
# Edge to commit: a backlog or an outage of the processors delays records by minutes or hours.
# histogram_quantile() never returns more than the largest finite bucket, so HL7EndToEndLatencyHigh
# (p99 > 30 s) needs buckets well above 30 s to be able to fire at all.
_END_TO_END_BUCKETS = _LATENCY_BUCKETS + (60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

EDGE_REQUESTS = Counter(
    "hl7_edge_requests_total",
    "Requests (HTTP, SOAP) and MLLP messages answered by the edge receiver; MLLP uses the status "
    "the same outcome gets over HTTP.",
    ["transport", "status", "ack"],
)
EDGE_AUTH_FAILURES = Counter(
    "hl7_edge_auth_failures_total",
    "Refused logins: bad_credentials, missing_credentials, network_not_allowed, rate_limited; "
    "MLLP: unknown_certificate, tls_handshake.",
    ["reason"],
)
EDGE_REQUEST_DURATION = Histogram(
    "hl7_edge_request_duration_seconds",
    "Time from request start to reply, per transport.",
    ["transport"],
    buckets=_REQUEST_BUCKETS,
)
EDGE_PUBLISH_DURATION = Histogram(
    "hl7_edge_publish_duration_seconds",
    "Time from produce() to Kafka's delivery report for hl7.raw.",
    buckets=_LATENCY_BUCKETS,
)
EDGE_LIMIT_REFUSALS = Counter(
    "hl7_edge_limit_refusals_total",
    "Connections or requests refused by a hostile-client limit (docs/edge.md, Hardening).",
    ["limit"],
)
EDGE_OPEN_CONNECTIONS = Gauge(
    "hl7_edge_open_connections",
    "HTTP connections currently open on the edge.",
)
EDGE_MLLP_CONNECTIONS = Gauge(
    "hl7_edge_mllp_connections",
    "MLLP connections currently open on the edge (SPEC 4a), handshakes included.",
)
PROCESSOR_RECORDS = Counter(
    "hl7_processor_records_total",
    "Raw records routed, by outcome and reason (reason empty when accepted).",
    ["outcome", "reason", "principal"],
)
PROCESSOR_TRANSACTIONS = Counter(
    "hl7_processor_transactions_total",
    "Kafka transactions ended by the processor.",
    ["result"],
)
PROCESSOR_END_TO_END = Histogram(
    "hl7_processor_end_to_end_seconds",
    "From the edge's received_at to the commit of the routed record.",
    buckets=_END_TO_END_BUCKETS,
)
PROCESSOR_CONSUMER_LAG = Gauge(
    "hl7_processor_consumer_lag",
    "Records behind the partition's high watermark, per assigned raw partition.",
    ["partition"],
)
PROCESSOR_CONTROL_ID_REUSED = Counter(
    "hl7_processor_control_id_reused_total",
    "Accepted records whose MSH-10 an earlier accepted record of the same principal and MSH-4 "
    "had, with another payload (decision row 12: not a duplicate).",
    ["principal"],
)
PROCESSOR_DEDUPE_EVICTIONS = Counter(
    "hl7_processor_dedupe_evictions_total",
    "Dedupe entries dropped before their window ended because a partition held "
    "HL7_DEDUPE_MAX_ENTRIES (a resend of one of them would be accepted again).",
)
PROCESSOR_DEDUPE_ENTRIES = Gauge(
    "hl7_processor_dedupe_entries",
    "Accepted messages remembered for decision row 12, per owned raw partition.",
    ["partition"],
)
PROCESSOR_DEDUPE_RESTORE = Histogram(
    "hl7_processor_dedupe_restore_seconds",
    "Time to restore one partition's dedupe state from its changelog on assignment.",
    buckets=_LATENCY_BUCKETS + (60.0, 120.0, 300.0),
)
REGISTRY_RELOADS = Counter(
    "hl7_registry_reloads_total",
    "Registry file (re)loads, ok or error (invalid file refused, old one kept).",
    ["result"],
)
REGISTRY_INFO = Gauge(
    "hl7_registry_info",
    "The registry version in force (value is always 1).",
    ["version"],
)
REGISTRY_FILE_LOADED = Gauge(
    "hl7_registry_file_loaded",
    "1 when the registry file on disk is the one in force; 0 while a changed file is refused "
    "(invalid or unreadable) and the previous version stays in force.",
)
REGISTRY_LAST_SUCCESS = Gauge(
    "hl7_registry_last_success_timestamp_seconds",
    "Unix time of the last successful registry (re)load; 0 = none yet.",
)
BUILD_INFO = Info("hl7_gateway_build", "Version of the gateway package.")
BUILD_INFO.info({"version": __version__})

# Series that alerts watch with increase()/rate() exist at 0 from the start: a series
# born at 1 looks unchanged to increase(), so the first refused reload or the first
# aborted transaction would never fire its alert.
for _result in ("ok", "error"):
    REGISTRY_RELOADS.labels(result=_result)
for _result in ("committed", "aborted"):
    PROCESSOR_TRANSACTIONS.labels(result=_result)
for _limit in (
    "connections",
    "requests_in_progress",
    "body_budget",
    "header_timeout",
    "header_bytes",
    "header_count",
    "body_rate",
    "mllp_connections",
    "mllp_handshakes",
):
    EDGE_LIMIT_REFUSALS.labels(limit=_limit)
