"""The dedupe changelog's records (pure): the entries one transaction accepted on one partition.

One record per raw partition per transaction, written to the changelog partition with the
same number as the raw partition, in the transaction that writes the accepted records:

* key: ``<raw partition>@<ingest id of the record's first entry>`` (ASCII): unique (an
  ingest id is accepted at most once per raw record) and the same when an aborted
  transaction is retried;
* value, version 1: ``0x01`` then one 68-byte entry per accepted record (big-endian)::

      key (16) | control (16) | received_at_us (int64) | accepted partition (int32)
               | accepted offset (int64) | ingest id (16, the UUID's bytes)

One record per transaction rather than one per entry: a Kafka record costs the processor
a ``produce`` call and the broker a record, and per entry that was 16 % of the processor's
throughput on the benchmark box (docs/stream.md, "Dedupe"). Entries are never updated in
place, so compaction has nothing to merge; the records leave by retention (window + 1 day).

Hashes and ids only: no MSH-10, MSH-4 or payload text. A value with another version byte or
a length that is not 1 + 68·n is not understood by this release and is skipped (its entries
are simply not remembered); a new version must stay readable by the release before it or
come with a migration note. A ``None`` value (tombstone) is ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from processor.stream.dedupe import Entry

__all__ = ["VERSION", "ENTRY_BYTES", "MAX_ENTRIES_PER_RECORD", "record_key", "encode", "decode"]

VERSION = 1
_ENTRY = struct.Struct(">16s16sqiq16s")
ENTRY_BYTES = _ENTRY.size  # 68
MAX_ENTRIES_PER_RECORD = 10_000  # 680 kB: under Kafka's default max.message.bytes (1 MB)
_HEADER = bytes([VERSION])


def record_key(raw_partition: int, first: Entry) -> bytes:
    return b"%d@%s" % (raw_partition, first.ingest_id.hex().encode())


def encode(entries: Iterable[Entry]) -> bytes:
    """The value of one changelog record (at most ``MAX_ENTRIES_PER_RECORD`` entries)."""
    pack = _ENTRY.pack
    return _HEADER + b"".join(
        pack(key, control, received_at_us, partition, offset, ingest_id)
        for key, control, received_at_us, ingest_id, partition, offset in entries
    )


def decode(value: bytes | None) -> list[Entry] | None:
    """The entries of one changelog record, in order; ``None`` when it is not understood
    (unknown version or length); ``[]`` for a tombstone."""
    if value is None:
        return []
    if not value or value[0] != VERSION or (len(value) - 1) % ENTRY_BYTES:
        return None
    return [
        Entry(key, control, received_at_us, ingest_id, partition, offset)
        for key, control, received_at_us, partition, offset, ingest_id in _ENTRY.iter_unpack(
            memoryview(value)[1:]
        )
    ]
