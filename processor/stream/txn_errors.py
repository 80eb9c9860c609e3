"""What to do when a Kafka transaction call fails (pure classification).

librdkafka reports three kinds of failure from the transactional API, and the
safe reaction differs:

* ``fatal()`` (fenced by a newer instance with the same ``transactional.id``,
  unsupported broker, ...): this process must stop; a restart is the recovery.
* ``txn_requires_abort()``: the broker refused something inside the transaction
  (a produce error, a rebalance-generation mismatch on the offset commit); the
  transaction is known not to commit, so abort it and re-read from the committed
  offsets.
* anything else, notably a timeout or ``retriable()`` error from
  ``commit_transaction`` / ``abort_transaction`` / ``send_offsets_to_transaction``:
  the outcome is *unknown*. librdkafka has no KIP-890 protection, so retrying on
  the same producer can let a late write from the old transaction land in a new
  one (Jepsen, 2024). The producer is discarded; a new one with the same
  ``transactional.id`` runs ``init_transactions``, which fences the old epoch and
  completes or aborts whatever it left open, and then the consumer rewinds to the
  committed offsets, which now tell the truth.
"""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError, KafkaException

__all__ = ["TxnAction", "classify", "error_name"]


class TxnAction(Enum):
    FATAL = "fatal"
    ABORT = "abort"
    RECREATE = "recreate"


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def classify(exc: BaseException) -> TxnAction:
    """The reaction to one failed transactional call (see module docstring)."""
    err = _kafka_error(exc)
    if err is None:
        return TxnAction.RECREATE
    if err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
        return TxnAction.FATAL
    if err.txn_requires_abort():
        return TxnAction.ABORT
    return TxnAction.RECREATE


def error_name(exc: BaseException) -> str:
    """A log-safe name for the failure (error code name, never record content)."""
    err = _kafka_error(exc)
    if err is None:
        return type(exc).__name__
    return f"{err.name()}: {err.str()}"
