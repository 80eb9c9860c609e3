"""The code against the contract tables of ``tests/contract.py`` (transcribed from the SPEC).

Nothing here derives its expectation from the code: every left-hand side comes from the
product, every right-hand side from ``tests.contract``. Features the SPEC asks for that are
not built yet are ``xfail(strict=True)``, so the day they land the xfail turns into a
failure and must be removed.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import processor.edge.app  # noqa: F401 - every process's metrics are registered on import
import processor.metrics  # noqa: F401
import processor.registry.watcher  # noqa: F401
import processor.stream.processor  # noqa: F401
from processor.cli import _resolve, build_parser
from processor.config import Settings
from processor.raw import REQUIRED_HEADERS, RawRecord, decode_headers
from processor.reasons import Reason
from processor.stream.routing import metadata_problem
from tests import contract

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ the tables themselves


def test_contract_reason_codes_are_the_decision_rows_plus_processing_error() -> None:
    from_rows = [code for row in sorted(contract.DECISION_ROWS) for code in contract.DECISION_ROWS[row]]
    assert list(contract.REASON_CODES) == [*from_rows, contract.UNEXPECTED_ERROR_REASON]
    assert len(set(contract.REASON_CODES)) == len(contract.REASON_CODES) == 14


def test_contract_metric_rows_are_unique_and_typed() -> None:
    names = [row.name for row in contract.METRICS]
    assert len(names) == len(set(names)) == 12
    for row in contract.METRICS:
        assert row.type in ("counter", "gauge", "histogram"), row
        assert set(row.values) <= set(row.labels), row
        if row.type == "counter":
            assert row.name.endswith("_total"), row


# ------------------------------------------------------------------------ SPEC 3 reason codes


def test_every_reason_of_the_code_is_a_contract_reason() -> None:
    assert {r.value for r in Reason} <= set(contract.REASON_CODES)


def test_every_contract_reason_but_row_12_is_in_the_code() -> None:
    assert set(contract.REASON_CODES) - contract.reasons_of_rows(12, 12) <= {r.value for r in Reason}


def test_reason_enum_equals_the_contract_reasons() -> None:
    assert {r.value for r in Reason} == set(contract.REASON_CODES)


def test_reason_values_are_their_names() -> None:
    """The values are the wire values (ERR segments, Avro enum, metric labels)."""
    for reason in Reason:
        assert reason.name == reason.value


# ------------------------------------------------------------------------ SPEC 5 raw headers


def test_required_raw_headers_are_the_contract_headers() -> None:
    assert tuple(REQUIRED_HEADERS) == contract.RAW_HEADERS


def _headers(**override: bytes | None) -> list[tuple[str, bytes]]:
    """The six headers with well-formed values; ``name=None`` drops one, ``name=b"..."`` sets it."""
    values = [b"0b9c1f9e-8d4e-4d55-9f65-3f1e1f3b7a11", b"mailco", b"partner", b"1767225599000000",
              b"203.0.113.7", b"http"]
    headers = dict(zip(contract.RAW_HEADERS, values))  # names from the contract, not the code
    headers.update(override)
    return [(name, value) for name, value in headers.items() if value is not None]


def _problem(headers: list[tuple[str, bytes]]) -> str | None:
    return metadata_problem(RawRecord("in.raw", 0, 1, None, b"MSH|", decode_headers(headers)))


def test_all_contract_headers_make_a_complete_record() -> None:
    assert _problem(_headers()) is None


@pytest.mark.parametrize("name", contract.RAW_HEADERS)
def test_each_contract_header_is_required(name: str) -> None:
    problem = _problem(_headers(**{name: None}))
    assert problem is not None and name in problem


@pytest.mark.parametrize("name", contract.RAW_HEADERS)
def test_each_contract_header_exactly_once(name: str) -> None:
    headers = _headers()
    headers.append((name, dict(headers)[name]))
    assert _problem(headers) is not None


@pytest.mark.parametrize("value", contract.TRANSPORTS)
def test_every_contract_transport_is_a_valid_header_value(value: str) -> None:
    assert _problem(_headers(**{"hl7.transport": value.encode()})) is None


@pytest.mark.parametrize("value", contract.PRINCIPAL_TYPES)
def test_every_contract_principal_type_is_a_valid_header_value(value: str) -> None:
    assert _problem(_headers(**{"hl7.principal_type": value.encode()})) is None


# ------------------------------------------------------------------------ SPEC 6 metrics


def _collector(name: str):  # type: ignore[no-untyped-def]
    return REGISTRY._names_to_collectors.get(name)  # noqa: SLF001 - no public lookup by name


def _check_metric(row: contract.MetricRow) -> None:
    collector = _collector(row.name)
    assert collector is not None, f"{row.name} is not on the default registry"
    assert collector._type == row.type, (row.name, collector._type)  # noqa: SLF001
    exposed = collector._name + ("_total" if row.type == "counter" else "")  # noqa: SLF001
    assert exposed == row.name
    labels = set(collector._labelnames)  # noqa: SLF001
    assert set(row.labels) <= labels, f"{row.name}: missing labels {set(row.labels) - labels}"
    extra = labels - set(row.labels) - set(row.optional_labels)
    assert not extra, f"{row.name}: labels the SPEC does not allow: {extra}"


@pytest.mark.parametrize("row", contract.METRICS, ids=[row.name for row in contract.METRICS])
def test_contract_metric_exists_with_type_and_labels(row: contract.MetricRow) -> None:
    _check_metric(row)


@pytest.mark.parametrize("row", [r for r in contract.METRICS if r.values], ids=[r.name for r in contract.METRICS if r.values])
def test_series_in_this_process_carry_only_contract_label_values(row: contract.MetricRow) -> None:
    """Whatever series exist now (pre-created at import, or left by tests that ran before in
    this process) use only the values the SPEC lists: a typo such as ``abort`` shows here."""
    collector = _collector(row.name)
    for family in collector.collect():
        for sample in family.samples:
            for label, allowed in row.values.items():
                if label in sample.labels:
                    assert sample.labels[label] in allowed, (sample.name, sample.labels)


# ------------------------------------------------------------------------ SPEC 7 command line


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _command(argv: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in argv:
        choices = _subcommands(parser)
        assert word in choices, f"hl7-processor {' '.join(argv)}: no {word!r} among {sorted(choices)}"
        parser = choices[word]
    return parser


@pytest.mark.parametrize("argv", contract.CLI_COMMANDS, ids=[" ".join(c) for c in contract.CLI_COMMANDS])
def test_cli_knows_every_contract_command(argv: tuple[str, ...]) -> None:
    parser = _command(argv)
    assert not _subcommands(parser), "a SPEC command must be complete, not a group"
    handler = parser.get_default("handler")
    assert handler, f"{argv} has no handler"
    assert callable(_resolve(handler)), handler


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}  # noqa: SLF001


def test_explain_takes_registry_principal_and_an_optional_message() -> None:
    parser = _command(("explain",))
    assert set(contract.EXPLAIN_OPTIONS) <= _options(parser)
    args = build_parser().parse_args(["explain", "--registry", "r.yaml", "--principal", "p"])
    assert args.message == "-"  # "MESSAGE_FILE or -": stdin when absent
    args = build_parser().parse_args(["explain", "--registry", "r.yaml", "--principal", "p", "m.hl7"])
    assert args.message == "m.hl7"


def test_registry_check_takes_a_file_and_decode_a_topic() -> None:
    assert build_parser().parse_args(["registry", "check", "x.yaml"]).file == "x.yaml"
    assert build_parser().parse_args(["decode", contract.TOPIC_DEADLETTER]).topic == contract.TOPIC_DEADLETTER


def test_deadletter_replay_filters_by_reason_principal_and_time() -> None:
    parser = _command(("deadletter", "replay"))
    assert set(contract.REPLAY_FILTER_OPTIONS) <= _options(parser)


def test_console_script_is_hl7_processor() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert contract.CONSOLE_COMMAND in scripts
    assert callable(_resolve(scripts[contract.CONSOLE_COMMAND]))


# ------------------------------------------------------------------------ SPEC 7 configuration


@pytest.fixture
def bare_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings with no HL7_* variable and no .env file."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("HL7_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _field(env_var: str) -> str:
    assert env_var.startswith("HL7_")
    return env_var[4:].lower()


@pytest.mark.parametrize("env_var", contract.ENV_VARS)
def test_every_contract_variable_is_a_setting(env_var: str) -> None:
    assert _field(env_var) in Settings.model_fields


@pytest.mark.parametrize(("env_var", "default"), [*contract.DEFAULTS.items(), *contract.README_DEFAULTS.items()])
def test_contract_defaults(bare_settings: Settings, env_var: str, default: object) -> None:
    assert getattr(bare_settings, _field(env_var)) == default


@pytest.mark.parametrize("env_var", ["HL7_EDGE_PORT", "HL7_MAX_BODY_BYTES", "HL7_CONSUMER_GROUP"])
def test_contract_variables_are_read_from_the_environment(
    bare_settings: Settings, monkeypatch: pytest.MonkeyPatch, env_var: str
) -> None:
    value = {"HL7_EDGE_PORT": "18080", "HL7_MAX_BODY_BYTES": "12345", "HL7_CONSUMER_GROUP": "g-x"}[env_var]
    monkeypatch.setenv(env_var, value)
    assert str(getattr(Settings(_env_file=None), _field(env_var))) == value  # type: ignore[call-arg]


def _readme_config_row(env_var: str) -> str:
    rows = [line for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("|") and f"`{env_var}`" in line.split("|")[1]]
    assert rows, f"README's configuration table has no row for {env_var}"
    return rows[0]


@pytest.mark.parametrize("env_var", contract.ENV_VARS)
def test_readme_documents_every_contract_variable(env_var: str) -> None:
    _readme_config_row(env_var)


@pytest.mark.parametrize(("env_var", "default"), [*contract.DEFAULTS.items(), *contract.README_DEFAULTS.items()])
def test_readme_documents_the_contract_default(env_var: str, default: object) -> None:
    row = _readme_config_row(env_var)
    shown = str(int(default)) if isinstance(default, float) and default.is_integer() else str(default)
    assert f"`{shown}`" in row.split("|")[2], (env_var, row)
