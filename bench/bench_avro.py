"""The compiled Avro body writer against fastavro, on the records the processor writes.

    python bench/bench_avro.py [--rounds 101] [--records 2000]

Workload: ``--records`` raw records of ``bench_stream``'s corpus (~1 KB ADT^A01 / ORU^R01,
every 10th not authorised), routed the processor's way (row 1, ``decide``,
``accepted_record`` / ``dead_letter_record``) into the dicts it encodes: 90 %
``AcceptedMessage``, 10 % ``DeadLetter``. Contenders, each writing the single-object header
and the body of every record:

* ``fastavro``: ``fastavro.schemaless_writer`` into a ``BytesIO`` (the codec before);
* ``compiled``: :func:`processor.avro.fast_writer.compile_writer`'s function per schema;
* ``codec``: ``AvroCodec.encode`` as the processor calls it (field-name check, compiled
  writer, fastavro fallback).

Before timing, every record's bytes are checked identical across the three. Then many
short interleaved rounds (the order rotates each round, so a burst of load from another
process hits all contenders of a round alike). Reported: per contender the median and
min-max of µs/record over the rounds, and the per-round ratio fastavro / compiled (median
and min-max): the figure the developers' guide asks to be at least 2 for a hand-written
hot-path encoder.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastavro
from bench_stream import REGISTRY_YAML, headers, message

from processor.avro.codec import SINGLE_OBJECT_MAGIC, AvroCodec
from processor.avro.fast_writer import compile_writer
from processor.avro.records import accepted_record, dead_letter_record
from processor.avro.schemas import ACCEPTED_MESSAGE, DEAD_LETTER, load_schema, schemas_dir
from processor.decision import Accepted, decide
from processor.raw import RawRecord, decode_headers, parse_epoch_micros
from processor.registry.loader import parse_registry

ACCEPTED_TOPIC, DEADLETTER_TOPIC = "hl7.accepted", "hl7.deadletter"

Encoded = list[tuple[str, dict[str, Any]]]


def workload(n: int) -> Encoded:
    """(topic, record) pairs as the processor builds them for ``n`` corpus messages."""
    registry = parse_registry(REGISTRY_YAML.encode())
    now = time.time_ns() // 1000
    out: Encoded = []
    for i in range(n):
        raw = RawRecord("hl7.raw", i % 3, i, b"mailco|trustalias", message(i), decode_headers(headers()))
        decision = decide(registry, "mailco", "partner", raw.value, None)
        if isinstance(decision, Accepted):
            received = parse_epoch_micros(raw.headers["hl7.received_at"])
            out.append((ACCEPTED_TOPIC, accepted_record(decision, raw, now, received_at_us=received)))
        else:
            record = dead_letter_record(
                reason=decision.reason,
                detail=decision.detail,
                raw=raw,
                dead_lettered_at_us=now,
                registry_version=registry.version,
                header=decision.header,
            )
            out.append((DEADLETTER_TOPIC, record))
    return out


def contenders(codec: AvroCodec) -> dict[str, Callable[[str, dict[str, Any]], bytes]]:
    schemas = {topic: codec.schema_for(topic) for topic in (ACCEPTED_TOPIC, DEADLETTER_TOPIC)}
    headers_ = {topic: SINGLE_OBJECT_MAGIC + schema.fingerprint for topic, schema in schemas.items()}
    parsed = {topic: schema.parsed for topic, schema in schemas.items()}
    compiled = {topic: compile_writer(schema.parsed) for topic, schema in schemas.items()}

    def with_fastavro(topic: str, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(headers_[topic])
        fastavro.schemaless_writer(buffer, parsed[topic], record)
        return buffer.getvalue()

    def with_compiled(topic: str, record: dict[str, Any]) -> bytes:
        return compiled[topic](record, headers_[topic])  # type: ignore[misc,return-value]

    return {"fastavro": with_fastavro, "compiled": with_compiled, "codec": codec.encode}


def _time(encode: Callable[[str, dict[str, Any]], bytes], records: Encoded) -> float:
    start = time.perf_counter()
    for topic, record in records:
        encode(topic, record)
    return (time.perf_counter() - start) / len(records) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=101, help="interleaved rounds")
    parser.add_argument("--records", type=int, default=2000, help="records per contender and round")
    args = parser.parse_args(argv)

    directory = schemas_dir(None)
    codec = AvroCodec(
        {
            ACCEPTED_TOPIC: load_schema(ACCEPTED_MESSAGE, directory),
            DEADLETTER_TOPIC: load_schema(DEAD_LETTER, directory),
        }
    )
    records = workload(args.records)
    sides = contenders(codec)
    for topic, record in records:  # the same bytes from all three, or no figure at all
        values = {name: encode(topic, record) for name, encode in sides.items()}
        if len(set(values.values())) != 1:
            raise SystemExit(f"contenders disagree on a {topic} record")
    for _ in range(3):  # warm-up
        for encode in sides.values():
            _time(encode, records)

    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(_time(sides[name], records))
    ratios = [f / c for f, c in zip(times["fastavro"], times["compiled"], strict=True)]

    accepted = sum(1 for topic, _ in records if topic == ACCEPTED_TOPIC)
    print(
        f"{len(records)} records ({accepted} AcceptedMessage, {len(records) - accepted} DeadLetter), "
        f"{args.rounds} rounds, python {sys.version.split()[0]}, fastavro {fastavro.__version__}"
    )
    for name in names:
        series = times[name]
        print(
            f"  {name:<9} median {statistics.median(series):6.2f} us/record "
            f"(min-max {min(series):.2f}-{max(series):.2f})"
        )
    print(
        f"  fastavro / compiled, per round: median {statistics.median(ratios):.2f} "
        f"(min-max {min(ratios):.2f}-{max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
