#!/usr/bin/env bash
# make mutation: mutation testing (mutmut 3) of the pure core against the fast unit tests
# (no broker). Report, scope and triage of surviving mutants: docs/mutation.md.
#
# Runs in a copy of the tree (build/mutation/tree) so the working tree gets no mutants/
# directory and edits made meanwhile do not disturb the run. Every run starts afresh:
# mutmut 3.8's incremental mode kept a mutant "survived" after a new test that kills it.
#
#   tools/mutation.sh                    # run, then print the summary and the survivors
#   MUTATION_JOBS=4 tools/mutation.sh    # parallel workers (default 2)
#   MUTATION_STRICT=1 tools/mutation.sh  # fail when a survivor is not triaged in docs/mutation.md
#   MUTATION_KEEP=1 tools/mutation.sh    # reuse the last run's results (incremental; see above)
#   MUTATION_HEADER=1 tools/mutation.sh  # also mutate processor/hl7/header.py (~900 more mutants,
#                                        # ~20 more minutes on 2 cores; survivors not yet triaged)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
PY=$ROOT/$VENV/bin/python
MUTMUT_VERSION=${MUTMUT_VERSION:-3.8.1}
WORK=${MUTATION_DIR:-build/mutation}
case $WORK in /*) ;; *) WORK=$ROOT/$WORK ;; esac
JOBS=${MUTATION_JOBS:-2}

if ! "$PY" -c 'import mutmut' 2>/dev/null; then
  "$PY" -m pip install --quiet "mutmut==$MUTMUT_VERSION"
fi

mkdir -p "$WORK"
TREE=$WORK/tree
if [ "${MUTATION_KEEP:-0}" != 1 ]; then rm -rf "$TREE"; fi
mkdir -p "$TREE"
# Refresh the copy (sources, tests, config); with MUTATION_KEEP=1 mutants/ is kept.
tar --exclude=./.venv --exclude=./.git --exclude=./build --exclude=./mutants --exclude=./.hypothesis \
    --exclude=./.pytest_cache --exclude=./.mypy_cache --exclude=./.ruff_cache -cf - . | tar -xf - -C "$TREE"

# The [tool.mutmut] section below is what pyproject.toml should hold; until it does, the
# copy gets it appended (the working tree's pyproject.toml is never changed).
if ! grep -q '^\[tool\.mutmut\]' "$TREE/pyproject.toml"; then
  cat >>"$TREE/pyproject.toml" <<'EOF'

[tool.mutmut]
# `make mutation` (tools/mutation.sh): mutation testing of the pure core against the fast unit
# tests only (no broker). Report and surviving mutants: docs/mutation.md.
source_paths = ["processor"]
also_copy = ["schemas"]  # symlink to processor/schemas, read by tests/unit/stream/test_routing.py
only_mutate = [
    "processor/hl7/msh4.py",
    "processor/hl7/ack.py",
    "processor/decision.py",
    "processor/edge/intake.py",
    "processor/avro/records.py",
    "processor/stream/routing.py",
]
pytest_add_cli_args_test_selection = [
    "tests/unit/hl7",
    "tests/unit/avro",
    "tests/unit/test_decision.py",
    "tests/unit/test_decision_memo.py",
    "tests/unit/test_mutants_decision.py",
    "tests/unit/edge/test_edge_intake.py",
    "tests/unit/edge/test_mutants_intake.py",
    "tests/unit/stream/test_routing.py",
    "tests/unit/stream/test_mutants_routing.py",
]
# Fork each mutant's worker from a process that has only collected the tests, not from
# mutmut's main process, which ran the whole suite once (caches and other state filled).
process_isolation = "forkserver"
# A fixed Hypothesis seed: the same examples for every mutant (a verdict must not depend on
# luck); tests/_mutation_cache_reset.py (written by tools/mutation.sh) empties the core's
# caches before each test, else mutmut maps a test that hit a cache to no function at all.
pytest_add_cli_args = ["-p", "no:cacheprovider", "--hypothesis-seed=0", "-p", "tests._mutation_cache_reset"]
EOF
fi

# The pure core caches results (functools.lru_cache, bounded dicts): a test whose call is
# answered from a cache filled by an earlier test never reaches the cached function, so
# mutmut's coverage map leaves that test out of the function's tests (and a mutant there
# can survive a test that would kill it). Emptied before every test, in the copy only.
cat >"$TREE/tests/_mutation_cache_reset.py" <<'PLUGIN'
"""pytest plugin for tools/mutation.sh: empty the pure core's caches before each test."""

import sys

_DICT_CACHES = {"processor.hl7.msh4": ("_KNOWN",), "processor.decision": ("_memo",)}


def pytest_runtest_setup(item):
    for name, module in list(sys.modules.items()):
        if not name.startswith("processor.") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()
        for attr in _DICT_CACHES.get(name, ()):
            cache = getattr(module, attr, None)
            if isinstance(cache, dict):
                cache.clear()
PLUGIN

if [ "${MUTATION_HEADER:-0}" = 1 ]; then
  sed -i 's|^    "processor/hl7/msh4.py",|    "processor/hl7/msh4.py",\n    "processor/hl7/header.py",|' "$TREE/pyproject.toml"
fi

cd "$TREE"
start=$(date +%s)
# mutmut draws a progress spinner with \r: keep only its last state per line.
"$PY" -m mutmut run --max-children "$JOBS" 2>&1 | tr '\r' '\n' | grep -v -E '^[^ ]+ (Generating mutants|Running stats|Running clean tests)' || true
echo "mutation run: $(( $(date +%s) - start ))s with $JOBS workers"

"$PY" -m mutmut results --all true >"$WORK/results.txt" 2>&1 || true
rc=0
"$PY" - "$WORK/results.txt" "$ROOT/docs/mutation.md" <<'EOF' || rc=$?
import collections, re, sys
results = [line.strip().rsplit(": ", 1) for line in open(sys.argv[1]) if ": " in line]
status = collections.Counter(s for _, s in results)
total = sum(status.values())
killed = status["killed"] + status["timeout"]  # a mutant that hangs the tests is caught too
others = "  ".join(f"{k}: {v}" for k, v in sorted(status.items()) if k != "killed")
print(f"mutants: {total}  killed: {killed} ({100 * killed / max(total, 1):.1f}%)  {others}")
survivors = [name for name, s in results if s not in ("killed", "timeout")]
try:
    triaged = open(sys.argv[2]).read()
except OSError:
    triaged = ""
untriaged = [n for n in survivors if not re.search(re.escape(n) + r"(?![0-9])", triaged)]
for n in survivors:
    print(("  " if n not in untriaged else "! ") + n + ": " + dict(results)[n])
if untriaged:
    print(f"{len(untriaged)} survivor(s) not triaged in docs/mutation.md (marked !): `mutmut show <name>` in the run's tree/")
    sys.exit(3)
EOF
if [ "$rc" = 3 ] && [ "${MUTATION_STRICT:-0}" != 1 ]; then rc=0; fi
exit "$rc"
