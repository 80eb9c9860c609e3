"""A/B of the MSH reader: the working tree against a git revision, same process, same run.

    python bench/bench_header_ab.py [--ab REV] [--rounds 201] [--passes 200]

Workload (bench_header's "ours"): ``read_header(bytes)`` + ``parse_msh4(msh4_namespace_id,
customer_principal=True)`` over the 12 corpus messages. "before" is REV's
``processor/hl7/header.py`` and ``processor/hl7/msh4.py`` (``git show``, loaded as temporary
modules; the rest of ``processor`` is the working tree's), "after" the working tree's.

Each round times ``--passes`` passes of each side, alternating which side goes first, so a
burst of load from another process hits both sides of a round alike. Many short rounds
(about 5 ms a side) rather than a few long ones: on a loaded 2-core box a burst then spoils
a few rounds instead of tilting many (2026-12-03, load 1.5-1.9: the median ratio of eight
runs stayed within 1.056-1.067, where 21 rounds of 2 000 passes gave 0.92-1.14).
Reported: the median and min-max of each side's ns/message over the rounds, and the median
and min-max of the per-round ratio after/before (the figure to trust on a loaded machine).
Both sides are checked to return the same values on every corpus message before timing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processor.errors import Msh4Error
from processor.hl7 import header as after_header
from processor.hl7 import msh4 as after_msh4
from tests.corpus import load, names

ROOT = Path(__file__).resolve().parent.parent

#: The public attributes of MshHeader, compared between the two sides: its properties.
_ATTRS = tuple(name for name, value in vars(after_header.MshHeader).items() if isinstance(value, property))


def load_revision(rev: str, path: str, name: str) -> types.ModuleType:
    """``path`` as it was at git revision ``rev``, imported as module ``name``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses look their module up while building the class
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # our own git history
    return module


Workload = Callable[[bytes], tuple[Any, Any]]


def workload(header: types.ModuleType, msh4: types.ModuleType) -> Workload:
    read_header = header.read_header
    parse_msh4 = msh4.parse_msh4

    def run(data: bytes) -> tuple[Any, Any]:
        h = read_header(data)
        try:
            return h, parse_msh4(h.msh4_namespace_id, customer_principal=True)
        except Msh4Error:
            return h, None

    return run


def _same(before: Workload, after: Workload, corpus: Sequence[bytes]) -> None:
    for data in corpus:
        (hb, ab), (ha, aa) = before(data), after(data)
        for attr in _ATTRS:
            if getattr(hb, attr) != getattr(ha, attr):
                raise SystemExit(f"before and after differ on {attr}")
        if (ab is None) != (aa is None) or (
            ab is not None
            and (ab.connecting_alias, ab.data_controller_alias, ab.legacy)
            != (aa.connecting_alias, aa.data_controller_alias, aa.legacy)
        ):
            raise SystemExit("before and after differ on parse_msh4")


def _time(fn: Workload, corpus: Sequence[bytes], passes: int) -> float:
    """ns per message of ``passes`` passes over ``corpus``."""
    start = time.perf_counter_ns()
    for _ in range(passes):
        for data in corpus:
            fn(data)
    return (time.perf_counter_ns() - start) / (passes * len(corpus))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ab", default="a4379fd^", metavar="REV", help="the 'before' git revision")
    parser.add_argument("--rounds", type=int, default=201, help="interleaved rounds")
    parser.add_argument("--passes", type=int, default=200, help="passes over the corpus per side and round")
    args = parser.parse_args(argv)

    before = workload(
        load_revision(args.ab, "processor/hl7/header.py", "_ab_before_header"),
        load_revision(args.ab, "processor/hl7/msh4.py", "_ab_before_msh4"),
    )
    after = workload(after_header, after_msh4)
    corpus = [load(n) for n in names()]
    _same(before, after, corpus)
    for _ in range(3):  # warm-up: caches, allocator
        _time(before, corpus, args.passes // 10 or 1)
        _time(after, corpus, args.passes // 10 or 1)

    t_before: list[float] = []
    t_after: list[float] = []
    for i in range(args.rounds):
        if i % 2:
            t_after.append(_time(after, corpus, args.passes))
            t_before.append(_time(before, corpus, args.passes))
        else:
            t_before.append(_time(before, corpus, args.passes))
            t_after.append(_time(after, corpus, args.passes))
    ratios = [a / b for a, b in zip(t_after, t_before, strict=True)]

    print(
        f"read_header + parse_msh4, {len(corpus)} corpus messages, {args.rounds} rounds x "
        f"{args.passes} passes, python {sys.version.split()[0]}"
    )
    for label, series in ((f"before ({args.ab})", t_before), ("after (working tree)", t_after)):
        print(
            f"  {label:<24} median {statistics.median(series):>7,.0f} ns/message  "
            f"(min-max {min(series):,.0f}-{max(series):,.0f})"
        )
    print(
        f"  per-round ratio after/before: median {statistics.median(ratios):.3f} "
        f"(min-max {min(ratios):.3f}-{max(ratios):.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
