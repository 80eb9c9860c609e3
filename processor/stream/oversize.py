"""What to do with a record whose output Kafka refuses as too large (pure, no I/O).

A broker refuses a whole produce request (record batch) when one record in it is too
large, so every record refused *in a shared batch* is only a suspect: its retry is
sent alone (a batch of its own). A record refused *alone* (or refused by the producer
itself, before anything was sent) really is too large: its retry writes a small
``PROCESSING_ERROR`` dead letter without payload instead, so it cannot abort every
retry of its transaction and stop its partition.

Records are named by their source coordinates ``(topic, partition, offset)``. They are
forgotten once their output is committed, or when their partition is no longer owned
(the new owner starts afresh and finds out for itself).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Coords", "OversizePolicy"]

Coords = tuple[str, int, int]


class OversizePolicy:
    """Suspects (re-send alone) and proven oversize records (dead-letter without payload)."""

    __slots__ = ("_suspects", "_oversize")

    def __init__(self) -> None:
        self._suspects: set[Coords] = set()
        self._oversize: set[Coords] = set()

    def slim(self, coords: Coords) -> bool:
        """Route this record as a payload-less dead letter: its output was refused alone."""
        return bool(self._oversize) and coords in self._oversize

    def alone(self, coords: Coords) -> bool:
        """Send this record's output in a batch of its own: it was refused with others."""
        return bool(self._suspects) and coords in self._suspects

    def refused(self, coords: Coords, alone: bool) -> None:
        """Kafka refused this record's output as too large (``alone``: in a batch of its own)."""
        if alone:
            self._suspects.discard(coords)
            self._oversize.add(coords)
        else:
            self._suspects.add(coords)

    def written(self, committed: Iterable[Coords]) -> None:
        """These records' outputs are committed: nothing more to decide for them."""
        if self._suspects or self._oversize:
            done = set(committed)
            self._suspects -= done
            self._oversize -= done

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """These partitions are no longer owned."""
        gone = set(partitions)
        for pending in (self._suspects, self._oversize):
            pending.difference_update({c for c in pending if (c[0], c[1]) in gone})

    def __len__(self) -> int:
        return len(self._suspects) + len(self._oversize)
