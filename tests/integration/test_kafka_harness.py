"""The test harness talks to a real broker: transactions and read_committed work."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.kafka


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)


def _read_all(bootstrap: str, topic: str, group: str, isolation: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    idle = 0
    while idle < 6:
        msg = consumer.poll(0.5)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            continue
        idle = 0
        values.append(msg.value())
    consumer.close()
    return values


def test_committed_records_visible_and_aborted_records_hidden(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("harness")
    _create_topic(kafka_bootstrap, topic)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txn")}
    )
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"aborted-0")
    producer.flush(10)
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"committed-3")
    producer.commit_transaction(30)

    committed = _read_all(kafka_bootstrap, topic, unique_name("g"), "read_committed")
    uncommitted = _read_all(kafka_bootstrap, topic, unique_name("g"), "read_uncommitted")

    assert committed == [b"committed-0", b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record did reach the log: read_uncommitted sees it, read_committed does not.
    assert b"aborted-0" in uncommitted
    assert len(uncommitted) == 5
