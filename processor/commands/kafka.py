"""``hl7-processor kafka``: a local Apache Kafka in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import threading

from processor.errors import ConfigError
from processor.kafka.local_broker import KAFKA_VERSION, LocalKafka
from processor.shutdown import on_shutdown_signal


def main(args: argparse.Namespace) -> int:
    broker = LocalKafka(data_dir=args.data_dir, port=args.port)
    stop = threading.Event()
    on_shutdown_signal(stop.set)
    try:
        try:
            bootstrap = broker.start()
        except ConfigError as exc:
            print(f"hl7-processor kafka: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"Apache Kafka {KAFKA_VERSION} (KRaft, single node) ready", flush=True)
        print(f"bootstrap: {bootstrap}", flush=True)
        print(f"export HL7_KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        print(f"data: {broker.data_dir}{'' if args.data_dir else ' (removed on exit)'}", flush=True)
        stop.wait()
    finally:
        broker.close()
        print("Kafka stopped", flush=True)
    return 0
