"""``hl7-processor topics create``."""

from __future__ import annotations

import argparse

from processor.config import load_settings
from processor.kafka.topics import ensure_topics


def create(args: argparse.Namespace) -> int:
    settings = load_settings()
    for name, state in ensure_topics(
        settings, partitions=args.partitions, replication_factor=args.replication_factor
    ).items():
        print(f"{name}: {state}")
    return 0
