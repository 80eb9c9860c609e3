"""Thin shells around confluent-kafka and a real local Apache Kafka broker."""
