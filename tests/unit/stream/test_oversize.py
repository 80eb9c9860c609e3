"""The oversize policy: suspects re-sent alone, proven ones dead-lettered without payload."""

from __future__ import annotations

from processor.stream.oversize import OversizePolicy

A, B, C = ("raw", 0, 10), ("raw", 0, 11), ("raw", 1, 5)


def test_nothing_pending_routes_normally() -> None:
    policy = OversizePolicy()
    assert not policy.alone(A) and not policy.slim(A) and len(policy) == 0


def test_refused_in_a_shared_batch_is_a_suspect_sent_alone() -> None:
    policy = OversizePolicy()
    policy.refused(A, alone=False)
    policy.refused(B, alone=False)  # a neighbour refused with it
    assert policy.alone(A) and policy.alone(B)
    assert not policy.slim(A) and not policy.slim(B)


def test_refused_alone_becomes_a_payload_less_dead_letter() -> None:
    policy = OversizePolicy()
    policy.refused(A, alone=False)
    policy.refused(A, alone=True)
    assert policy.slim(A) and not policy.alone(A)


def test_refused_by_the_producer_goes_straight_to_slim() -> None:
    policy = OversizePolicy()
    policy.refused(C, alone=True)
    assert policy.slim(C)


def test_written_records_are_forgotten() -> None:
    policy = OversizePolicy()
    policy.refused(A, alone=False)
    policy.refused(B, alone=True)
    policy.refused(C, alone=False)
    policy.written([A, B])
    assert not policy.alone(A) and not policy.slim(B) and policy.alone(C)
    assert len(policy) == 1


def test_partitions_no_longer_owned_are_forgotten() -> None:
    policy = OversizePolicy()
    policy.refused(A, alone=False)
    policy.refused(B, alone=True)
    policy.refused(C, alone=False)
    policy.forget([("raw", 0)])
    assert not policy.alone(A) and not policy.slim(B)
    assert policy.alone(C)
