"""``hl7-processor deadletter replay``: dry run by default, ``--execute`` to publish.

Unusable options, settings or registry reach ``processor.cli`` as exceptions (one line,
exit 2); exit 1 when the operator declines at the prompt (nothing published).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime

from tqdm import tqdm

from processor.config import load_settings, require
from processor.deadletter_replay import DeadLetterReplayer, ReplayCriteria
from processor.errors import ConfigError, InputError
from processor.reasons import REASON_CODES
from processor.registry.loader import load_registry


def _when(option: str, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"deadletter replay: {option} {text!r} is not an ISO-8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _criteria(args: argparse.Namespace) -> ReplayCriteria:
    reasons = frozenset(args.reason or ())
    unknown = sorted(reasons - set(REASON_CODES))
    if unknown:
        raise InputError(f"deadletter replay: unknown reason code(s): {', '.join(unknown)}")
    return ReplayCriteria(
        reasons=reasons,
        principals=frozenset(args.principal or ()),
        since=_when("--since", args.since),
        until=_when("--until", args.until),
    )


def main(args: argparse.Namespace) -> int:
    criteria = _criteria(args)
    settings = load_settings()
    require(settings, "kafka_bootstrap_servers")
    registry = None
    if not args.force:
        registry_file = args.registry or settings.registry_file
        if not registry_file:
            raise ConfigError(
                "deadletter replay: give the current registry (--registry or HL7_REGISTRY_FILE) so "
                "only dead letters it now accepts are replayed, or --force to skip that check"
            )
        registry = load_registry(registry_file)  # RegistryInvalid: exit 2
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
        if scan.still_rejected.get("DUPLICATE"):
            print(
                "  (a DUPLICATE's original was accepted: replaying it would deliver the message twice;"
                " --force does)"
            )
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
            raise InputError(
                "deadletter replay: refusing to publish without --yes when stdin is not a terminal"
            )
        answer = input(f"re-publish {len(candidates)} record(s) to {settings.topic_raw}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("cancelled")
            return 1
    with tqdm(total=len(candidates), desc="replaying", unit="rec", file=sys.stderr) as bar:
        published = replayer.publish(candidates, progress=bar.update)
    print(f"replayed {published} record(s) to {settings.topic_raw}")
    return 0
