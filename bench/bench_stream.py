"""Benchmark of the exactly-once stream processor against the bare transactional loop.

Throughput (records/s, one process, ~1 KB ADT^A01 / ORU^R01 messages, every 10th
dead-lettered, all routed exactly once in Kafka transactions with the same batch policy):

* bare: the same consume -> produce transactional loop copying values as they are (no
  header parsing, no decision, no Avro): what Kafka + librdkafka + Python allow here;
* processor: :class:`processor.stream.StreamProcessor` (row 1 + decide + Avro);
* optional (``--avro-only``): the bare loop writing a fixed typical AcceptedMessage with the
  processor's codec (what the Avro library alone costs); (``--naive``): the bare loop plus
  ``hl7apy.parser.parse_message`` per record.

Made to be a stable instrument on a shared box (the broker on the same cores):

1. warm-up first, untimed: ``--warmup`` records (default 50,000) are produced to a topic of
   their own and copied by the bare loop, so the broker's page cache, log segments and JIT
   (the broker is a JVM), and the client libraries are warm before anything is timed;
2. one raw topic of ``--records`` (default 150,000) that every run reads from the start
   with a consumer group of its own; each run is timed for ``--seconds`` (default 6) from
   its first commit to its last (group join excluded), or until it has read everything;
3. ``--rounds`` (default 3) interleaved rounds, each starting with another variant (bare,
   processor, processor with dedupe off, processor pipelined), so drift or a load spike
   does not favour one; every timed run of these four is a Python process of its own
   (``isolated_run``: runs in one process agree closely, processes differ by up to 40 %);
4. the report gives, per variant, the median and the spread (min-max) over the rounds, and
   ratios of the medians and per round: processor / bare (with and without dedupe), the
   dedupe's cost, pipelined / not (``HL7_PIPELINE_TRANSACTIONS`` 2 against the default 1).

Dedupe (decision row 12) is on in every processor variant but one: ``processor_dedupe_off``
(``HL7_DEDUPE_ENABLED=false``) runs in the same rounds, and the report gives the cost of the
dedupe as ``1 - on / off`` (of the medians and per round). Every dedupe-on run writes a
changelog topic of its own (a shared one would make the next run's records duplicates and
its start a restore); the stream has no resends, the common case.

Latency (``--latency``; with HL7_BATCH_MAX_MS 100 and 10): the processor as a real
``python -m processor stream`` subprocess, a generator producing at a steady offered rate
with ``hl7.received_at`` = send time, and a ``read_committed`` reader: end-to-end = time
the routed record is visible to a downstream consumer - received_at. p50 / p99 over the
steady-state window.

Usage: ``python bench/bench_stream.py [--rounds 3] [--records 150000] [--seconds 6]``.
Env ``HL7_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:19092). Bench topics are deleted
at the end. About 2-3 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from tqdm import tqdm  # noqa: E402

from processor.config import Settings  # noqa: E402
from processor.kafka.client_config import consumer_config, producer_config  # noqa: E402
from processor.kafka.topics import ensure_topics  # noqa: E402
from processor.registry.loader import parse_registry  # noqa: E402
from processor.stream import StreamProcessor  # noqa: E402

PASSWORD_HASH = (
    "$argon2id$v=19$m=8,t=1,p=1$SnMS2d9rx+FyL0jKo7ZPBg$kKWwPqyZB/qNQZR/L0B6wiDyujNe7apV6zzDB30QOFs"
)
REGISTRY_YAML = f"""\
customers:
  - {{id: trust-1, alias: trustalias}}
  - {{id: trust-2, alias: otheralias}}
partners:
  - {{id: mailco, username: partner_mailco, password_hash: "{PASSWORD_HASH}", authorised_by: [trust-1]}}
"""


def message(i: int, size: int = 1024) -> bytes:
    """~1 KB fake ADT^A01 or ORU^R01 (v2.4, CR-separated); every 10th is not authorised."""
    msh4 = b"otheralias{otheralias}" if i % 10 == 0 else b"trustalias{trustalias}"
    if i % 2:
        msh9, body = (
            b"ADT^A01^ADT_A01",
            (
                b"EVN|A01|20240115103000\rPID|1||ZZT%07d^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST||19700101|F\r"
                b"PV1|1|I|WARD1^BAY1^BED1\r" % i
            ),
        )
    else:
        msh9, body = (
            b"ORU^R01^ORU_R01",
            (
                b"PID|1||ZZT%07d^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST||19700101|F\r"
                b"OBR|1||LAB%d|CBC^Full blood count\rOBX|1|NM|HB^Haemoglobin||135|g/L|115-165|N|||F\r"
                % (i, i)
            ),
        )
    msg = b"MSH|^~\\&|PAS|" + msh4 + b"|PKB|PKB|20240115103000||" + msh9 + b"|B%d|P|2.4\r" % i + body
    n = 1
    while len(msg) < size:
        msg += b"NTE|%d||Synthetic note text for a fake patient, no real data in here.\r" % n
        n += 1
    return msg


def headers(received_us: int | None = None) -> list[tuple[str, bytes]]:
    return [
        ("hl7.ingest_id", str(uuid.uuid4()).encode()),
        ("hl7.principal_id", b"mailco"),
        ("hl7.principal_type", b"partner"),
        ("hl7.received_at", str(received_us or time.time_ns() // 1000).encode()),
        ("hl7.source_ip", b"203.0.113.7"),
        ("hl7.transport", b"http"),
    ]


def new_settings(bootstrap: str, tag: str) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_raw=f"bench.{tag}.raw.{run}",
        topic_accepted=f"bench.{tag}.accepted.{run}",
        topic_deadletter=f"bench.{tag}.deadletter.{run}",
        consumer_group=f"bench.{tag}.{run}",
        transactional_id=f"bench.{tag}.{run}",
        topic_partitions=3,
    )


def produce_raw(settings: Settings, n: int) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20, "enable.idempotence": True}
    )
    for i in range(n):
        while True:
            try:
                producer.produce(
                    settings.topic_raw, value=message(i), key=b"mailco|trustalias", headers=headers()
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


class Progress:
    """Committed-record counter sampled from another thread: first/last commit times,
    shown as a progress bar on stderr."""

    def __init__(self, desc: str = "", total: int | None = None) -> None:
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] = (0.0, 0)
        self._bar = tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, leave=False) if desc else None

    def note(self, total: int) -> None:
        if self._bar is not None and total > self._bar.n:
            self._bar.update(total - self._bar.n)
        now = time.perf_counter()
        if total and self.first is None:
            self.first = (now, total)
        if total != self.last[1]:
            self.last = (now, total)

    def rate(self) -> float:
        if self.first is None or self.last[0] <= self.first[0]:
            return 0.0
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])


def txn_loop(
    settings: Settings,
    n: int,
    budget_s: float,
    transform: Callable[[bytes], object] | None,
    progress: Progress,
    *,
    start_on_receive: bool = False,
) -> None:
    """The bare transactional consume -> produce loop (same batch policy as the processor).

    ``transform(value)`` runs on every record; when it returns bytes those are produced
    instead of the raw value.
    """
    consumer = Consumer(consumer_config(settings, **{"group.id": settings.consumer_group + ".loop"}))
    producer = Producer(
        producer_config(settings, **{"transactional.id": settings.transactional_id + ".loop"})
    )
    producer.init_transactions(30)
    consumer.subscribe([settings.topic_raw])
    done = 0
    deadline = None
    while done < n and (deadline is None or time.perf_counter() < deadline):
        first = consumer.poll(0.5)
        if first is None or first.error():
            continue
        if start_on_receive and progress.first is None:
            progress.first = (time.perf_counter(), 0)
        batch = [first]
        end = time.perf_counter() + settings.batch_max_ms / 1000
        while len(batch) < settings.batch_max_records and time.perf_counter() < end:
            # max(0, ...): the time left may turn negative after the check, and librdkafka takes
            # a negative timeout as "wait forever" (seen: the bench hung in round 3).
            left = max(0.0, end - time.perf_counter())
            batch += consumer.consume(settings.batch_max_records - len(batch), left)
        producer.begin_transaction()
        offsets: dict[int, int] = {}
        for msg in batch:
            value = msg.value()
            if transform is not None:
                out = transform(value)
                if isinstance(out, bytes):
                    value = out
            producer.produce(settings.topic_accepted, value=value, key=msg.key(), headers=msg.headers())
            offsets[msg.partition()] = msg.offset() + 1
        producer.send_offsets_to_transaction(
            [TopicPartition(settings.topic_raw, p, o) for p, o in offsets.items()],
            consumer.consumer_group_metadata(),
            30,
        )
        producer.commit_transaction(30)
        done += len(batch)
        progress.note(done)
        if deadline is None:  # timed from the first commit, like the processor
            deadline = time.perf_counter() + budget_s
    consumer.close()


def run_processor(settings: Settings, n: int, budget_s: float, progress: Progress) -> None:
    proc = StreamProcessor(settings, parse_registry(REGISTRY_YAML.encode()))
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    deadline = None
    while proc.committed_records < n:
        progress.note(proc.committed_records)
        if proc.committed_records and deadline is None:
            deadline = time.perf_counter() + budget_s
        if deadline is not None and time.perf_counter() > deadline:
            break
        time.sleep(0.005)
    progress.note(proc.committed_records)
    proc.stop()
    thread.join(30)


def isolated_run(kind: str, settings: Settings, n: int, budget_s: float) -> float:
    """One timed run (``bare`` loop or ``processor``) in a fresh Python process; its records/s.

    Why a process each: on this 2-core box the same run in two processes differs by up to
    40 % (22 k against 31 k records/s for the processor, back to back), while runs inside
    one process agree within a few percent, so a whole report from one process would carry
    that one process's luck (how its threads and the broker's share the cores). A process
    per run samples it like any other source of spread.
    """
    started = time.perf_counter()
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--one-run",
            kind,
            "--settings-json",
            settings.model_dump_json(),
            "--records",
            str(n),
            "--seconds",
            str(budget_s),
        ],
        capture_output=True,
        text=True,
        timeout=budget_s + 180,
        check=True,
    )
    rate = float(json.loads(child.stdout.strip().splitlines()[-1])["rate"])
    label = f"{kind} ({settings.consumer_group.rsplit('.', 1)[-1]})"
    print(f"{label:<28} {rate:>10,.0f} records/s  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return rate


def one_run(kind: str, settings_json: str, n: int, budget_s: float) -> int:
    """The child of :func:`isolated_run`: one run, its rate as a JSON line on stdout."""
    settings = Settings.model_validate_json(settings_json)
    progress = Progress()
    if kind == "bare":
        txn_loop(settings, n, budget_s, None, progress)
    else:
        run_processor(settings, n, budget_s, progress)
    print(json.dumps({"rate": progress.rate()}))
    return 0


def avro_encoder(settings: Settings) -> Callable[[bytes], bytes]:
    """Encode each raw value as the payload of a fixed, typical AcceptedMessage: the cost
    of the Avro library alone (no header read, no decision, no record building)."""
    from processor.avro.codec import AvroCodec

    encode = AvroCodec.from_settings(settings).encode
    topic = settings.topic_accepted
    template = {
        "ingest_id": str(uuid.uuid4()),
        "received_at": 1_700_000_000_000_000,
        "processed_at": 1_700_000_000_100_000,
        "principal_id": "mailco",
        "principal_type": "PARTNER",
        "connecting_customer_id": "trust-1",
        "connecting_alias": "trustalias",
        "data_controller_id": "trust-1",
        "data_controller_alias": "trustalias",
        "registry_version": "0" * 16,
        "message_type": "ADT",
        "trigger_event": "A01",
        "message_control_id": "B1",
        "hl7_version": "2.4",
        "sending_application": "PAS",
        "sending_facility": "trustalias{trustalias}",
        "transport": "http",
        "source_ip": "203.0.113.7",
        "source_topic": settings.topic_raw,
        "source_partition": 0,
        "source_offset": 0,
        "payload": b"",
        "message_structure": "ADT_A01",
        "message_datetime": "20240115103000",
        "processing_id": "P",
        "character_set": None,
    }
    return lambda value: encode(topic, {**template, "payload": value})


def summary(rates: list[float]) -> dict[str, object]:
    return {
        "median": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "runs": [round(r, 1) for r in rates],
    }


def warm_up(bootstrap: str, n: int) -> float:
    """Produce ``n`` records and copy them once with the bare loop (untimed); returns seconds."""
    t0 = time.perf_counter()
    settings = new_settings(bootstrap, "warm")
    ensure_topics(settings)
    produce_raw(settings, n)
    txn_loop(settings, n, 120, None, Progress("warm-up", n))
    delete_topics(settings, extra=[settings.dedupe_topic])
    return time.perf_counter() - t0


def throughput(
    bootstrap: str, n: int, rounds: int, seconds: float, *, avro_only: bool = False, naive: bool = False
) -> dict[str, object]:
    """Interleaved rounds of bare loop and processor on one pre-produced topic."""
    settings = new_settings(bootstrap, "tput")
    ensure_topics(settings)
    produce_raw(settings, n)
    runs: dict[str, list[float]] = {
        "bare": [],
        "processor": [],
        "processor_dedupe_off": [],
        "processor_pipelined": [],
    }
    changelogs: list[str] = []

    def variant(tag: str, **update: object) -> Settings:
        chosen = settings.model_copy(
            update={
                "consumer_group": f"{settings.consumer_group}.{tag}",
                "transactional_id": f"{settings.transactional_id}.{tag}",
                "topic_dedupe": f"{settings.topic_raw}.dedupe.{tag}",
                **update,
            }
        )
        if chosen.dedupe_enabled:  # an empty changelog of its own
            from confluent_kafka.admin import AdminClient

            from processor.kafka.topics import dedupe_spec

            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([dedupe_spec(chosen).new_topic()])[chosen.dedupe_topic].result(30)
            changelogs.append(chosen.dedupe_topic)
        return chosen

    def bare(r: int) -> None:
        runs["bare"].append(isolated_run("bare", variant(f"bare{r}", dedupe_enabled=False), n, seconds))

    def processor(r: int) -> None:
        runs["processor"].append(isolated_run("processor", variant(f"proc{r}"), n, seconds))

    def processor_dedupe_off(r: int) -> None:
        """HL7_DEDUPE_ENABLED=false: decision row 12 not evaluated, no changelog."""
        chosen = variant(f"nodedupe{r}", dedupe_enabled=False)
        runs["processor_dedupe_off"].append(isolated_run("processor", chosen, n, seconds))

    def processor_pipelined(r: int) -> None:
        """HL7_PIPELINE_TRANSACTIONS=2: each transaction routed while the previous one commits."""
        chosen = variant(f"pipelined{r}", pipeline_transactions=2)
        runs["processor_pipelined"].append(isolated_run("processor", chosen, n, seconds))

    steps = [bare, processor, processor_dedupe_off, processor_pipelined]
    try:
        for r in range(rounds):  # each round starts with another variant
            for step in steps[r % len(steps) :] + steps[: r % len(steps)]:
                step(r)
        if avro_only:
            encoder = avro_encoder(settings)
            runs["bare_plus_avro_encode"] = []
            for r in range(rounds):
                progress = Progress(f"bare + Avro only, round {r + 1}", n)
                txn_loop(variant(f"avro{r}", dedupe_enabled=False), n, seconds, encoder, progress)
                runs["bare_plus_avro_encode"].append(progress.rate())
        if naive:
            from hl7apy.parser import parse_message

            progress = Progress("naive (hl7apy)", n)
            txn_loop(
                variant("naive", dedupe_enabled=False),
                n,
                10,
                lambda v: parse_message(v.decode("ascii"), find_groups=False),
                progress,
                start_on_receive=True,
            )  # too slow for several commits: from the first read
            runs["naive_hl7apy"] = [progress.rate()]
    finally:
        delete_topics(settings, extra=[*changelogs, settings.dedupe_topic])
    report: dict[str, object] = {name: summary(rates) for name, rates in runs.items()}
    on_off = ratio(runs["processor"], runs["processor_dedupe_off"])
    report["dedupe_cost"] = {  # 1 - on / off; goal (issue 16): at most 0.15
        "of_medians": round(1 - on_off["of_medians"], 3),
        "per_round_min": round(1 - on_off["per_round_max"], 3),
        "per_round_max": round(1 - on_off["per_round_min"], 3),
    }
    for name, top, bottom in (
        ("processor_vs_bare", "processor", "bare"),
        ("processor_dedupe_off_vs_bare", "processor_dedupe_off", "bare"),
        ("pipelined_vs_not", "processor_pipelined", "processor"),
    ):
        report[name] = ratio(runs[top], runs[bottom])
    return report


def ratio(tops: list[float], bottoms: list[float]) -> dict[str, float]:
    """``tops / bottoms``: of the medians, and the smallest and largest of the rounds."""
    per_round = [t / b for t, b in zip(tops, bottoms, strict=True) if b]
    return {
        "of_medians": round(statistics.median(tops) / statistics.median(bottoms), 3),
        "per_round_min": round(min(per_round), 3),
        "per_round_max": round(max(per_round), 3),
    }


def delete_topics(settings: Settings, extra: list[str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topics = [settings.topic_raw, settings.topic_accepted, settings.topic_deadletter, *(extra or [])]
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        try:
            future.result(60)
        except Exception as exc:  # noqa: BLE001 - best effort: a bench leftover is harmless
            print(f"could not delete bench topic: {type(exc).__name__}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(bootstrap: str, rate: int, seconds: float, batch_max_ms: int) -> dict[str, float]:
    settings = new_settings(bootstrap, "lat")
    ensure_topics(settings)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    (tmp / "registry.yaml").write_text(REGISTRY_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "HL7_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HL7_REGISTRY_FILE": str(tmp / "registry.yaml"),
            "HL7_TOPIC_RAW": settings.topic_raw,
            "HL7_TOPIC_ACCEPTED": settings.topic_accepted,
            "HL7_TOPIC_DEADLETTER": settings.topic_deadletter,
            "HL7_CONSUMER_GROUP": settings.consumer_group,
            "HL7_TRANSACTIONAL_ID": settings.transactional_id,
            "HL7_METRICS_PORT": "0",
            "HL7_BATCH_MAX_MS": str(batch_max_ms),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "--log-level", "WARNING", "stream"],
        env=env,
        cwd=tmp,
        stderr=subprocess.DEVNULL,
    )
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    reader.subscribe([settings.topic_accepted, settings.topic_deadletter])
    samples: list[tuple[float, float]] = []  # (received_at, latency)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = reader.poll(0.1)  # returns at the first record (consume() waits for a full batch)
            if msg is not None:
                if msg.error():
                    continue
                now = time.time()
                received = int(dict(msg.headers())["hl7.received_at"]) / 1e6
                samples.append((received, now - received))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})
    # Warm-up: wait until the processor has joined and routed a first record.
    producer.produce(settings.topic_raw, value=message(1), headers=headers())
    producer.flush(10)
    reader_thread = threading.Thread(target=read, daemon=True)
    reader_thread.start()
    t_wait = time.time()
    while not samples and time.time() - t_wait < 60:
        time.sleep(0.1)
    warm = len(samples)
    start = time.perf_counter()
    sent = 0
    interval = 1.0 / rate
    while time.perf_counter() - start < seconds:
        target = start + sent * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.produce(
            settings.topic_raw, value=message(sent + 2), key=b"k%d" % (sent % 64), headers=headers()
        )
        producer.poll(0)
        sent += 1
    producer.flush(10)
    offered = sent / (time.perf_counter() - start)
    deadline = time.time() + 20
    while len(samples) - warm < sent and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    reader_thread.join(5)
    reader.close()
    proc.terminate()
    proc.wait(30)
    steady = [lat for _rx, lat in samples[warm:]]
    steady = steady[len(steady) // 10 :]  # drop the first 10% (ramp-up)
    return {
        "batch_max_ms": batch_max_ms,
        "offered_msgs_per_s": round(offered, 1),
        "delivered": len(samples) - warm,
        "sent": sent,
        "p50_ms": round(percentile(steady, 0.50) * 1000, 1) if steady else float("nan"),
        "p99_ms": round(percentile(steady, 0.99) * 1000, 1) if steady else float("nan"),
        "max_ms": round(max(steady) * 1000, 1) if steady else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=150_000, help="raw records every run may read")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed window per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant (>= 3)")
    parser.add_argument(
        "--warmup", type=int, default=50_000, help="records produced and copied untimed first"
    )
    parser.add_argument("--avro-only", action="store_true", help="also time the bare loop + Avro encoding")
    parser.add_argument("--naive", action="store_true", help="also time the bare loop + hl7apy parsing")
    parser.add_argument("--latency", action="store_true", help="also measure end-to-end latency")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--rate", type=int, default=1000, help="offered msg/s for --latency")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument(
        "--batch-ms",
        type=int,
        nargs="+",
        default=[100, 10],
        help="HL7_BATCH_MAX_MS values for the latency runs",
    )
    parser.add_argument("--one-run", choices=["bare", "processor"], help=argparse.SUPPRESS)
    parser.add_argument("--settings-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        return one_run(args.one_run, args.settings_json, args.records, args.seconds)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (median and spread need them)")
    bootstrap = os.environ.get("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    t0 = time.time()
    report: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "records": args.records,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        # Other processes on the box skew every figure: shown so a reader can judge a run.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if not args.latency_only:
        report["warmup_s"] = round(warm_up(bootstrap, args.warmup), 1)
        report["throughput_records_per_s"] = throughput(
            bootstrap, args.records, args.rounds, args.seconds, avro_only=args.avro_only, naive=args.naive
        )
    if args.latency or args.latency_only:
        # Default batch window (100 ms, like Kafka Streams' EOS commit interval) and a short one.
        report["latency"] = [latency(bootstrap, args.rate, args.latency_seconds, ms) for ms in args.batch_ms]
    report["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
