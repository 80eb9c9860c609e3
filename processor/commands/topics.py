"""``hl7-processor topics create [--check]``.

Without ``--check``: creates the raw, accepted, dead-letter, replay ledger and dedupe changelog topics
(idempotent; existing topics are left alone) and prints ``<topic>: created|exists``.

With ``--check``: creates nothing; prints one line per difference between the settings
and the existing topics (``<topic>: <item> is <actual>, expected <configured>`` or
``<topic>: missing ...``). Exit 0 when there is none, 1 when there is drift (the verdict),
2 on a configuration error or when Kafka cannot be asked (``ConfigError`` /
``KafkaUnavailable``, reported by ``processor.cli``).
"""

from __future__ import annotations

import argparse
import sys

from processor.config import load_settings, require
from processor.kafka.topics import check_topics, ensure_topics


def create(args: argparse.Namespace) -> int:
    settings = load_settings()
    require(settings, "kafka_bootstrap_servers")
    if getattr(args, "check", False):
        drift = check_topics(settings, partitions=args.partitions, replication_factor=args.replication_factor)
        for difference in drift:
            print(difference)
        if drift:
            print(f"topics create --check: {len(drift)} difference(s) from the settings", file=sys.stderr)
            return 1
        print("topics create --check: the topics match the settings", file=sys.stderr)
        return 0
    for name, state in ensure_topics(
        settings, partitions=args.partitions, replication_factor=args.replication_factor
    ).items():
        print(f"{name}: {state}")
    return 0
