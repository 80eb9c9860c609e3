"""SPEC 6 metrics measured as changes: read /metrics, act, read again, assert the delta of the
exact series (name + label set). A real edge and a real processor share one registry file
and one raw topic, against the real broker, so the series move because the product did the
thing, never because a test touched a counter.

Every label value SPEC 6 lists that HTTP can produce today is provoked here (the coverage
test checks the scenario table against tests/contract.py). MLLP-only values
(``unknown_certificate``, ``tls_handshake``) and the metrics of features not built yet are
in tests/unit/test_contract.py as strict xfails.

Cost: one edge, one edge pointed at a closed port (AE/CE), one processor, ~40 requests.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.config import Settings, load_settings
from processor.edge.server import EdgeServer
from processor.kafka.local_broker import free_port
from processor.kafka.topics import ensure_topics
from processor.registry.watcher import RegistryWatcher
from processor.stream.metrics_server import MetricsServer, start_metrics_server
from processor.stream.processor import StreamProcessor
from tests import contract
from tests.builders import PASSWORD, SEED_PASSWORD, SEED_USER, basic, hl7_message, registry_yaml
from tests.corpus import seed_message
from tests.integration.edge.conftest import wait_ready
from tests.integration.stream.stream_kit import (
    RawIn,
    produce_raw,
    raw_headers,
    wait_for,
    write_atomically,
)

pytestmark = pytest.mark.kafka

MAX_BODY = 64 * 1024
LAG_RECORDS = 200
SEED_AUTH = basic(SEED_USER, SEED_PASSWORD)
HL7 = "application/hl7-v2"

Series = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted label items)


def scrape(url: str) -> dict[Series, float]:
    """Every sample on ``url``/metrics, keyed by exact name and label set."""
    resp = httpx.get(url + "/metrics", timeout=30)
    assert resp.status_code == 200
    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def key(name: str, **labels: str) -> Series:
    return (name, tuple(sorted(labels.items())))


def deltas(before: dict[Series, float], after: dict[Series, float], *names: str) -> dict[Series, float]:
    """Non-zero changes of the samples called ``names`` (absent = 0)."""
    changed = {}
    for series in set(before) | set(after):
        if series[0] in names:
            d = after.get(series, 0.0) - before.get(series, 0.0)
            if d:
                changed[series] = d
    return changed


@dataclass
class Pipeline:
    settings: Settings
    registry_file: Path
    watcher: RegistryWatcher
    edge: EdgeServer
    edge_url: str
    down: EdgeServer  # an edge whose Kafka is a closed port: every store fails
    down_url: str
    processor: StreamProcessor
    metrics: MetricsServer
    lag_seen: dict[str, float] = field(default_factory=dict)  # max consumer lag sampled, per partition

    @property
    def processor_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics.port}"


def _sample_lag(stop: threading.Event, into: dict[str, float]) -> None:
    from prometheus_client import REGISTRY

    while not stop.is_set():
        for family in REGISTRY.collect():
            if family.name == "hl7_processor_consumer_lag":
                for s in family.samples:
                    p = s.labels["partition"]
                    into[p] = max(into.get(p, 0.0), s.value)
        time.sleep(0.005)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    run = uuid.uuid4().hex[:10]
    directory = tmp_path_factory.mktemp("metrics-contract")
    registry_file = directory / "registry.yaml"
    write_atomically(registry_file, registry_yaml())
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        registry_file=str(registry_file),
        topic_raw=f"mc.raw.{run}", topic_accepted=f"mc.accepted.{run}", topic_deadletter=f"mc.deadletter.{run}",
        consumer_group=f"mc.group.{run}", transactional_id=f"mc.txn.{run}",
        edge_host="127.0.0.1", edge_port=0, trusted_proxies="127.0.0.1/32",
        publish_timeout_seconds=5.0, login_failures_per_minute=3, login_lockout_seconds=30,
        max_body_bytes=MAX_BODY, batch_max_records=20, batch_max_ms=50,
    )
    ensure_topics(settings, partitions=1)
    watcher = RegistryWatcher(registry_file, 0.2)
    watcher.start()
    edge = EdgeServer(settings, lambda: watcher.current)
    edge_url = edge.start()
    down_settings = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "publish_timeout_seconds": 1.0}
    )
    down = EdgeServer(down_settings, lambda: watcher.current)
    down_url = down.start()
    for url in (edge_url, down_url):
        wait_ready(url)

    # A backlog before the processor starts, so its consumer lag is > 0 at its first update.
    produce_raw(settings, [
        RawIn(hl7_message(control_id=b"LAG%d" % i), raw_headers(), key=b"mailco|trustalias{trustalias}")
        for i in range(LAG_RECORDS)
    ])
    processor = StreamProcessor(settings, watcher, lag_interval_s=0.2)
    metrics = start_metrics_server(0, live=processor.live, readiness=processor.readiness, host="127.0.0.1")
    lag_seen: dict[str, float] = {}
    stop_sampling = threading.Event()
    sampler = threading.Thread(target=_sample_lag, args=(stop_sampling, lag_seen), daemon=True)
    sampler.start()
    worker = threading.Thread(target=processor.run, name="mc-processor", daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: processor.committed_records >= LAG_RECORDS, 90), "backlog not routed"
        stop_sampling.set()
        sampler.join(5)
        yield Pipeline(settings, registry_file, watcher, edge, edge_url, down, down_url, processor, metrics,
                       lag_seen)
    finally:
        stop_sampling.set()
        processor.stop()
        worker.join(60)
        metrics.close()
        edge.stop()
        down.stop()
        watcher.stop()


# ------------------------------------------------------------------------------- the edge


def _enhanced(msg: bytes) -> bytes:
    return msg.replace(b"|P|2.4\r", b"|P|2.4|||AL|NE\r")


def _soap(message: bytes) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:ws="{contract.SOAP_NAMESPACE}"><soapenv:Body><ws:acceptMessage>'
        f"<arg0><![CDATA[{message.decode()}]]></arg0></ws:acceptMessage></soapenv:Body></soapenv:Envelope>"
    ).encode()


@dataclass(frozen=True)
class Scenario:
    name: str
    act: Callable[[Pipeline], list[httpx.Response]]
    requests: dict[tuple[str, str, str], int]  # (transport, status, ack) -> delta
    auth: dict[str, int] = field(default_factory=dict)  # reason -> delta
    stored: int = 0  # records acknowledged by Kafka (publish duration observations)


def _post(url: str, body: bytes, *, auth: str | None = SEED_AUTH, ctype: str = HL7, xff: str = "192.0.2.10",
          path: str = "/hl7") -> httpx.Response:
    headers = {"Content-Type": ctype, "X-Forwarded-For": xff}
    if auth is not None:
        headers["Authorization"] = auth
    return httpx.post(url + path, content=body, headers=headers, timeout=60)


def _msa(resp: httpx.Response) -> str:
    for segment in resp.content.decode(errors="replace").replace("&#13;", "\r").split("\r"):
        if "MSA|" in segment:
            return segment[segment.index("MSA|"):].split("|")[1]
    raise AssertionError(f"no MSA in {resp.status_code} {resp.text[:300]}")


def _locked_out(p: Pipeline) -> list[httpx.Response]:
    xff = "198.51.100.77"
    bad = [_post(p.edge_url, seed_message(), auth=basic(SEED_USER, "wrong"), xff=xff) for _ in range(3)]
    return [*bad, _post(p.edge_url, seed_message(), xff=xff)]


SCENARIOS = [
    Scenario("AA", lambda p: [_post(p.edge_url, seed_message(control_id=b"MC-AA"))],
             {("http", "200", "AA"): 1}, stored=1),
    Scenario("AR", lambda p: [_post(p.edge_url, seed_message(b"thirdalias{thirdalias}", b"MC-AR"))],
             {("http", "200", "AR"): 1}, stored=1),
    Scenario("CA", lambda p: [_post(p.edge_url, _enhanced(seed_message(control_id=b"MC-CA")))],
             {("http", "200", "CA"): 1}, stored=1),
    Scenario("CR", lambda p: [_post(p.edge_url, _enhanced(seed_message(b"nosuch{trustalias}", b"MC-CR")))],
             {("http", "200", "CR"): 1}, stored=1),
    Scenario("AE", lambda p: [_post(p.down_url, seed_message(control_id=b"MC-AE"))],
             {("http", "503", "AE"): 1}),
    Scenario("CE", lambda p: [_post(p.down_url, _enhanced(seed_message(control_id=b"MC-CE")))],
             {("http", "503", "CE"): 1}),
    Scenario("no-msh-400", lambda p: [_post(p.edge_url, b"PID|1||ZZT0000001\r")], {("http", "400", "none"): 1}),
    Scenario("missing-credentials-401", lambda p: [_post(p.edge_url, seed_message(), auth=None, xff="198.51.100.31")],
             {("http", "401", "none"): 1}, {"missing_credentials": 1}),
    Scenario("bad-credentials-401",
             lambda p: [_post(p.edge_url, seed_message(), auth=basic(SEED_USER, "nope"), xff="198.51.100.32")],
             {("http", "401", "none"): 1}, {"bad_credentials": 1}),
    Scenario("network-not-allowed-403",
             lambda p: [_post(p.edge_url, seed_message(), auth=basic("partner_net", PASSWORD), xff="198.51.100.33")],
             {("http", "403", "none"): 1}, {"network_not_allowed": 1}),
    Scenario("too-large-413", lambda p: [_post(p.edge_url, seed_message() + b"NTE|" + b"x" * MAX_BODY + b"\r")],
             {("http", "413", "none"): 1}),
    Scenario("content-type-415", lambda p: [_post(p.edge_url, seed_message(), ctype="application/json")],
             {("http", "415", "none"): 1}),
    Scenario("rate-limited-429", _locked_out, {("http", "401", "none"): 3, ("http", "429", "none"): 1},
             {"bad_credentials": 3, "rate_limited": 1}),
    Scenario("soap-AA", lambda p: [_post(p.edge_url, _soap(seed_message(control_id=b"MC-SOAP")), ctype="text/xml",
                                         path="/soap")],
             {("soap", "200", "AA"): 1}, stored=1),
    Scenario("soap-401", lambda p: [_post(p.edge_url, _soap(seed_message()), auth=None, ctype="text/xml",
                                          path="/soap", xff="198.51.100.34")],
             {("soap", "401", "none"): 1}, {"missing_credentials": 1}),
]

EXPECTED_REPLY = {  # what each scenario's last reply is (status, MSA-1 or None)
    "AA": (200, "AA"), "AR": (200, "AR"), "CA": (200, "CA"), "CR": (200, "CR"), "AE": (503, "AE"),
    "CE": (503, "CE"), "no-msh-400": (400, None), "missing-credentials-401": (401, None),
    "bad-credentials-401": (401, None), "network-not-allowed-403": (403, None), "too-large-413": (413, None),
    "content-type-415": (415, None), "rate-limited-429": (429, None), "soap-AA": (200, "AA"),
    "soap-401": (401, None),
}


def test_scenarios_cover_every_label_value_http_can_produce() -> None:
    """The table below is complete against tests/contract.py: every ACK code, every status
    row of SPEC 4, both HTTP transports, every auth-failure reason but the MLLP ones."""
    acks = {ack for s in SCENARIOS for (_t, _st, ack) in s.requests}
    statuses = {int(status) for s in SCENARIOS for (_t, status, _a) in s.requests}
    transports = {t for s in SCENARIOS for (t, _st, _a) in s.requests}
    reasons = {r for s in SCENARIOS for r in s.auth}
    mllp_only = contract.MLLP_ONLY_LABEL_VALUES[("hl7_edge_auth_failures_total", "reason")]
    assert acks == set(contract.ACK_CODES)
    assert statuses == set(contract.HTTP_STATUSES)
    assert transports == {"http", "soap"} == set(contract.TRANSPORTS) - {"mllp", "gateway"}
    assert reasons == set(contract.AUTH_FAILURE_REASONS) - mllp_only
    assert set(EXPECTED_REPLY) == {s.name for s in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_edge_series_move_by_exactly_the_scenario(pipeline: Pipeline, scenario: Scenario) -> None:
    before = scrape(pipeline.edge_url)
    replies = scenario.act(pipeline)
    after = scrape(pipeline.edge_url)

    status, ack = EXPECTED_REPLY[scenario.name]
    assert replies[-1].status_code == status, replies[-1].text[:300]
    if ack is not None:
        assert _msa(replies[-1]) == ack
    row = {r.status: r for r in contract.HTTP_STATUS_ROWS}.get(status)
    if row is not None and row.required_header:
        assert row.required_header.lower() in replies[-1].headers, (status, dict(replies[-1].headers))

    assert deltas(before, after, "hl7_edge_requests_total") == {
        key("hl7_edge_requests_total", transport=t, status=st, ack=a): float(n)
        for (t, st, a), n in scenario.requests.items()
    }
    assert deltas(before, after, "hl7_edge_auth_failures_total") == {
        key("hl7_edge_auth_failures_total", reason=r): float(n) for r, n in scenario.auth.items()
    }
    per_transport: dict[str, int] = {}
    for (transport, _status, _ack), n in scenario.requests.items():
        per_transport[transport] = per_transport.get(transport, 0) + n
    assert deltas(before, after, "hl7_edge_request_duration_seconds_count") == {
        key("hl7_edge_request_duration_seconds_count", transport=t): float(n) for t, n in per_transport.items()
    }
    assert deltas(before, after, "hl7_edge_publish_duration_seconds_count") == (
        {key("hl7_edge_publish_duration_seconds_count"): float(scenario.stored)} if scenario.stored else {}
    )


# ------------------------------------------------------------------------------- the processor


def test_consumer_lag_rises_with_a_backlog_and_falls_to_zero(pipeline: Pipeline) -> None:
    """The backlog produced before the processor started was visible as lag (sampled while it
    was routed), and the gauge of the one raw partition returns to 0 once it is routed."""
    assert pipeline.lag_seen.get("0", 0.0) > 0, pipeline.lag_seen
    assert wait_for(lambda: scrape(pipeline.processor_url).get(key("hl7_processor_consumer_lag", partition="0"))
                    == 0.0, 30)
    lag_series = [s for s in scrape(pipeline.processor_url) if s[0] == "hl7_processor_consumer_lag"]
    assert lag_series == [key("hl7_processor_consumer_lag", partition="0")]  # owned partitions only


def test_processor_series_move_when_records_are_routed(pipeline: Pipeline) -> None:
    """One accepted and one dead-lettered message through edge -> Kafka -> processor."""
    accepted = key("hl7_processor_records_total", outcome="accepted", reason="", principal="mailco")
    refused = key("hl7_processor_records_total", outcome="deadletter", reason="PARTNER_NOT_AUTHORISED",
                  principal="mailco")
    e2e = key("hl7_processor_end_to_end_seconds_count")
    committed = key("hl7_processor_transactions_total", result="committed")
    aborted = key("hl7_processor_transactions_total", result="aborted")
    before = scrape(pipeline.processor_url)

    ok = _post(pipeline.edge_url, seed_message(control_id=b"MC-P1"))
    ar = _post(pipeline.edge_url, seed_message(b"thirdalias{thirdalias}", b"MC-P2"))
    assert (ok.status_code, _msa(ok), ar.status_code, _msa(ar)) == (200, "AA", 200, "AR")

    def routed() -> bool:
        now = scrape(pipeline.processor_url)
        return now.get(e2e, 0.0) - before.get(e2e, 0.0) >= 2
    assert wait_for(routed, 60), "the processor did not observe end-to-end latency for 2 records"
    after = scrape(pipeline.processor_url)

    assert deltas(before, after, "hl7_processor_records_total") == {accepted: 1.0, refused: 1.0}
    assert after[e2e] - before.get(e2e, 0.0) == 2
    # received_at (edge) to commit: positive and bounded by this test's own duration
    e2e_sum = key("hl7_processor_end_to_end_seconds_sum")
    assert 0 < after[e2e_sum] - before[e2e_sum] < 2 * 60
    assert after[committed] - before[committed] >= 1
    assert after[aborted] == before[aborted]


def test_processor_label_values_are_contract_values(pipeline: Pipeline) -> None:
    for (name, labels), _value in scrape(pipeline.processor_url).items():
        labels_d = dict(labels)
        if name == "hl7_processor_records_total":
            assert labels_d["outcome"] in contract.OUTCOMES
            if labels_d["outcome"] == "deadletter":
                assert labels_d["reason"] in contract.REASON_CODES
        if name == "hl7_processor_transactions_total":
            assert labels_d["result"] in contract.TRANSACTION_RESULTS


# ------------------------------------------------------------------------------- the registry


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]  # SPEC 3: registry_version


def test_registry_reloads_and_info(pipeline: Pipeline) -> None:
    """A refused file counts error and keeps the old version in force; a valid one counts ok
    and swaps hl7_registry_info{version} to the new SPEC 3 version (first 12 hex of SHA-256)."""
    url = pipeline.processor_url
    ok, error = key("hl7_registry_reloads_total", result="ok"), key("hl7_registry_reloads_total", result="error")
    old = _version(pipeline.registry_file)
    assert pipeline.watcher.current.version == old
    before = scrape(url)
    assert before[key("hl7_registry_info", version=old)] == 1.0

    write_atomically(pipeline.registry_file, "customers: [\n  - id: broken\n")  # not YAML that validates
    assert wait_for(lambda: scrape(url).get(error, 0.0) - before[error] >= 1, 30), "refusal not counted"
    refused = scrape(url)
    assert deltas(before, refused, "hl7_registry_reloads_total") == {error: 1.0}
    assert refused[key("hl7_registry_info", version=old)] == 1.0
    assert pipeline.watcher.current.version == old
    # the old registry still serves: the seed partner still gets AA
    assert _msa(_post(pipeline.edge_url, seed_message(control_id=b"MC-R1"))) == "AA"

    write_atomically(pipeline.registry_file, registry_yaml() + "# metrics contract: version 2\n")
    new = _version(pipeline.registry_file)
    assert wait_for(lambda: scrape(url).get(ok, 0.0) - refused[ok] >= 1, 30), "reload not counted"
    reloaded = scrape(url)
    assert deltas(refused, reloaded, "hl7_registry_reloads_total") == {ok: 1.0}
    # The new version is in force and the old one's series is gone. (Other series may exist:
    # watchers of earlier tests in this pytest process set theirs on the same registry.)
    assert reloaded[key("hl7_registry_info", version=new)] == 1.0
    assert key("hl7_registry_info", version=old) not in reloaded
    assert pipeline.watcher.current.version == new
