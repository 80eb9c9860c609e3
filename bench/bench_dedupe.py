"""The dedupe state (decision row 12): memory and restore time per million entries.

* memory: a partition's store restored from ``--entries`` decoded entries, measured with
  ``tracemalloc`` (every Python allocation the store holds), as bytes per entry and MiB per
  million;
* restore: ``--entries`` entries on a one-partition changelog topic, written as the processor
  writes them (transactions of 500 accepted records: one changelog record each), read back
  with :class:`processor.kafka.changelog.ChangelogReader` into a fresh store -- what a
  processor does when a partition is assigned. One untimed read first (warm-up: broker page
  cache, client), then ``--rounds`` timed reads; median and spread (min-max), scaled to one
  million entries;
* per record: ``identity`` (two SHA-256 digests and the payload's) and admit + encode +
  commit of a fresh entry, in microseconds (``timeit``-style loop, no Kafka).

Usage: ``python bench/bench_dedupe.py [--entries 1000000] [--rounds 3]``; env
``HL7_KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:19092). The topic is deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from processor.config import Settings  # noqa: E402
from processor.kafka.changelog import ChangelogReader  # noqa: E402
from processor.kafka.topics import dedupe_spec  # noqa: E402
from processor.stream.dedupe import DedupeStore, Entry, identity  # noqa: E402
from processor.stream.dedupe_codec import encode, record_key  # noqa: E402

WEEK_US = 7 * 86_400 * 1_000_000


def entries(n: int, now_us: int) -> list[Entry]:
    """``n`` distinct entries received over the last day, in acceptance order."""
    start = now_us - 86_400 * 1_000_000
    step = 86_400 * 1_000_000 // max(n, 1)
    return [
        Entry(os.urandom(16), os.urandom(16), start + i * step, uuid.uuid4().bytes, i % 6, i)
        for i in range(n)
    ]


def memory(n: int) -> dict[str, float]:
    now = time.time_ns() // 1000
    data = entries(n, now)
    gc.collect()
    tracemalloc.start()
    store = DedupeStore(WEEK_US, n)
    store.restore(0, data, now)
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert store.size(0) == n
    return {"bytes_per_entry": round(held / n, 1), "mib_per_million": round(held / n * 1e6 / 2**20, 1)}


def per_record(n: int = 200_000) -> dict[str, float]:
    payload = b"MSH|^~\\&|PAS|trustalias{trustalias}|PKB|PKB|20240115103000||ADT^A01|" + b"x" * 1000
    now = time.time_ns() // 1000
    args = [(f"C{i}", str(uuid.UUID(int=i))) for i in range(n)]  # built outside the timing
    idents = []
    t0 = time.perf_counter()
    for control_id, ingest_id in args:
        idents.append(
            identity(
                "mailco",
                "trustalias{trustalias}",
                control_id,
                payload,
                received_at_us=now,
                ingest_id=ingest_id,
            )
        )
    t_ident = (time.perf_counter() - t0) / n
    store = DedupeStore(WEEK_US, 1_000_000)
    t0 = time.perf_counter()
    for i, ident in enumerate(idents):  # transactions of 500, as the loop does
        got = store.admit(0, ident, i // 500)
        got.delivered(0, i)  # type: ignore[union-attr]
        if i % 500 == 499:
            encode(e for _p, e in store.pending_entries(i // 500))
            store.commit(i // 500, now)
    t_state = (time.perf_counter() - t0) / n
    return {"identity_us": round(t_ident * 1e6, 2), "admit_encode_commit_us": round(t_state * 1e6, 2)}


def restore(bootstrap: str, n: int, rounds: int) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_raw=f"bench.dedupe.raw.{tag}",
        consumer_group=f"bench.dedupe.{tag}",
        transaction_timeout_ms=60_000,
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([dedupe_spec(settings, partitions=1).new_topic()])[settings.dedupe_topic].result(30)
    try:
        now = time.time_ns() // 1000
        producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"bench.dedupe.{tag}", "linger.ms": 20}
        )
        producer.init_transactions(30)
        t0 = time.perf_counter()
        data = entries(n, now)
        for start in range(0, n, 50_000):  # 100 processor transactions per producer transaction
            producer.begin_transaction()
            for first in range(start, min(start + 50_000, n), 500):
                chunk = data[first : first + 500]
                while True:
                    try:
                        producer.produce(
                            settings.dedupe_topic, encode(chunk), record_key(0, chunk[0]), partition=0
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.commit_transaction(120)
        written_s = time.perf_counter() - t0
        del data
        times = []
        for r in range(rounds + 1):  # the first read warms up, untimed
            reader = ChangelogReader(settings)
            store = DedupeStore(WEEK_US, n)
            gc.collect()
            t0 = time.perf_counter()
            store.restore(0, reader.read(0), time.time_ns() // 1000)
            took = time.perf_counter() - t0
            reader.close()
            assert store.size(0) == n, store.size(0)
            if r:
                times.append(took * 1e6 / n)
            del store
        return {
            "entries": n,
            "write_s": round(written_s, 1),
            "seconds_per_million": {
                "median": round(statistics.median(times), 2),
                "min": round(min(times), 2),
                "max": round(max(times), 2),
                "runs": [round(t, 2) for t in times],
            },
        }
    finally:
        for future in admin.delete_topics([settings.dedupe_topic], operation_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # noqa: BLE001 - a bench leftover is harmless
                print(f"could not delete bench topic: {type(exc).__name__}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (median and spread need them)")
    bootstrap = os.environ.get("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    report: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "memory": memory(args.entries),
        "per_record": per_record(),
        "restore": restore(bootstrap, args.entries, args.rounds),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
