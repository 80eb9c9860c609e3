# Two commands on a fresh machine (Python 3.11+, Java 17+):
#   make run    - set up, then the whole pipeline (starts a local Apache Kafka if none is configured)
#   make test   - set up, then the whole test suite against a real Kafka broker
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The oldest confluent-kafka the code supports: the floor written in pyproject.toml.
KAFKA_FLOOR := $(shell sed -n 's/^ *"confluent-kafka\[schemaregistry\]>=\([0-9.]*\)".*/\1/p' pyproject.toml)
FLOOR_VENV ?= build/venv-kafka-floor
# Tool that writes requirements.lock (kept out of the project's venv).
LOCK_TOOL_VENV ?= build/venv-lock-tool
UV_VERSION ?= 0.13.8
LOCK_FLAGS ?=

.PHONY: setup run test test-unit test-floor lint lock mutation bench kafka clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/hl7-processor run

test: setup
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

# Lint and type checks ([tool.ruff] and [tool.mypy] in pyproject.toml): all three run, and
# the target fails if any of them did.
LINT_PATHS ?= processor bench
lint: setup
	status=0; \
	$(BIN)/ruff check $(LINT_PATHS) || status=1; \
	$(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	$(BIN)/mypy || status=1; \
	exit $$status

# Mutation testing (mutmut) of the pure core against the fast unit tests, in a copy of the
# tree; about 6 minutes on 2 cores, so not part of CI. Report and triage: docs/mutation.md.
mutation: setup
	VENV=$(VENV) bash tools/mutation.sh

# The unit tests with the oldest confluent-kafka pyproject.toml allows (its own venv),
# so the floor stays true. Raise the floor when code needs a newer client.
test-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -c 'import confluent_kafka as ck, sys; v = ck.version()[0]; print("confluent-kafka", v, "librdkafka", ck.libversion()[0]); sys.exit(v != "$(KAFKA_FLOOR)")'
	$(FLOOR_VENV)/bin/python -m pytest tests/unit

$(FLOOR_VENV)/.installed: pyproject.toml
	@test -n "$(KAFKA_FLOOR)" || { echo "no confluent-kafka[schemaregistry]>=X floor found in pyproject.toml" >&2; exit 1; }
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install --quiet -e '.[test]' 'confluent-kafka[schemaregistry]==$(KAFKA_FLOOR)'
	touch $@

# requirements.lock: the runtime dependencies pinned with sha256 hashes for the image
# (deploy/Dockerfile: CPython 3.11, Linux x86_64, binary wheels only). Run after changing
# [project] dependencies in pyproject.toml; pins still allowed are kept, so to move
# everything to the newest allowed versions: make lock LOCK_FLAGS=--upgrade
# (one package: LOCK_FLAGS='--upgrade-package starlette').
lock:
	$(PYTHON) -m venv $(LOCK_TOOL_VENV)
	$(LOCK_TOOL_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	$(LOCK_TOOL_VENV)/bin/uv pip compile pyproject.toml --quiet --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --only-binary :all: \
		--custom-compile-command 'make lock' $(LOCK_FLAGS) --output-file requirements.lock

kafka: setup
	$(BIN)/hl7-processor kafka

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build
