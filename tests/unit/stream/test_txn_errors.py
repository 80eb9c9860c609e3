"""Which reaction each kind of transactional failure gets (no Kafka needed)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from processor.stream.txn_errors import TxnAction, classify, error_name


def exc(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, "x", **flags))


def test_fatal_stops_the_process() -> None:
    assert classify(exc(KafkaError._FENCED, fatal=True)) is TxnAction.FATAL
    assert classify(exc(KafkaError.PRODUCER_FENCED)) is TxnAction.FATAL
    assert classify(exc(KafkaError.INVALID_PRODUCER_EPOCH, fatal=True, txn_requires_abort=True)) is TxnAction.FATAL


def test_abortable_aborts_and_rewinds() -> None:
    assert classify(exc(KafkaError.MSG_SIZE_TOO_LARGE, txn_requires_abort=True)) is TxnAction.ABORT
    assert classify(exc(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True)) is TxnAction.ABORT


def test_ambiguous_outcomes_replace_the_producer() -> None:
    assert classify(exc(KafkaError._TIMED_OUT, retriable=True)) is TxnAction.RECREATE
    assert classify(exc(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True)) is TxnAction.RECREATE
    assert classify(exc(KafkaError._STATE)) is TxnAction.RECREATE
    assert classify(RuntimeError("not kafka")) is TxnAction.RECREATE


def test_error_name_is_the_code_not_content() -> None:
    assert error_name(exc(KafkaError._TIMED_OUT)).startswith("_TIMED_OUT")
    assert error_name(ValueError("patient ZZTESTPATIENT")) == "ValueError"
