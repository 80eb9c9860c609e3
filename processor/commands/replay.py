"""``hl7-processor deadletter replay``: dry run by default, ``--execute`` to publish."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime

from tqdm import tqdm

from processor.config import load_settings
from processor.deadletter_replay import DeadLetterReplayer, ReplayCriteria
from processor.errors import RegistryInvalid
from processor.reasons import REASON_CODES
from processor.registry.loader import load_registry


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _criteria(args: argparse.Namespace) -> ReplayCriteria:
    reasons = frozenset(args.reason or ())
    unknown = sorted(reasons - set(REASON_CODES))
    if unknown:
        raise ValueError(f"unknown reason code(s): {', '.join(unknown)}")
    return ReplayCriteria(
        reasons=reasons,
        principals=frozenset(args.principal or ()),
        since=_when(args.since),
        until=_when(args.until),
    )


def main(args: argparse.Namespace) -> int:
    try:
        criteria = _criteria(args)
    except ValueError as exc:
        print(f"deadletter replay: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    registry = None
    if not args.force:
        registry_file = args.registry or settings.registry_file
        if not registry_file:
            print(
                "deadletter replay: give the current registry (--registry or HL7_REGISTRY_FILE) so "
                "only dead letters it now accepts are replayed, or --force to skip that check",
                file=sys.stderr,
            )
            return 2
        try:
            registry = load_registry(registry_file)
        except (RegistryInvalid, OSError) as exc:
            print(f"deadletter replay: registry unusable: {exc}", file=sys.stderr)
            return 2
    replayer = DeadLetterReplayer(settings)
    with tqdm(desc="scanning dead letters", unit="rec", file=sys.stderr) as bar:
        scan = replayer.scan(criteria, registry, progress=bar.update)
    candidates = scan.chosen
    by_reason = Counter(c.reason for c in candidates)
    print(f"{len(candidates)} dead letter(s) match; {scan.already_replayed} already replayed and skipped")
    for reason, count in sorted(by_reason.items()):
        print(f"  {reason}: {count}")
    if scan.still_rejected:
        total = sum(scan.still_rejected.values())
        print(f"{total} matching dead letter(s) would still be refused and are left alone:")
        for reason, count in sorted(scan.still_rejected.items()):
            print(f"  now {reason}: {count}")
    if scan.without_payload:
        print(
            f"{scan.without_payload} without payload (too large for Kafka; original in "
            f"{settings.topic_raw} at source_offset) left alone"
        )
    if not args.execute or not candidates:
        if not args.execute:
            print("dry run: nothing published (add --execute to replay)")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "deadletter replay: refusing to publish without --yes when stdin is not a terminal",
                file=sys.stderr,
            )
            return 2
        answer = input(f"re-publish {len(candidates)} record(s) to {settings.topic_raw}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("cancelled")
            return 1
    with tqdm(total=len(candidates), desc="replaying", unit="rec", file=sys.stderr) as bar:
        published = replayer.publish(candidates, progress=bar.update)
    print(f"replayed {published} record(s) to {settings.topic_raw}")
    return 0
