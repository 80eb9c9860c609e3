"""``hl7-processor explain``: one JSON object per message, the SPEC answer for every row."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import processor.decision as decision_module
from processor.cli import main
from processor.registry.loader import DEMO_REGISTRY_PATH, load_registry
from tests.builders import adt_a01

SAMPLE = Path(__file__).parent / "registry" / "data" / "sample_registry.yaml"
REPO = Path(__file__).resolve().parents[2]
KEYS = [
    "decision",
    "reason",
    "connecting_customer_id",
    "data_controller_id",
    "message_control_id",
    "registry_version",
    "dedupe",  # row 12 needs the processor's state: always "not checked"
]


def message(msh4: str, control_id: str = "CTRL-1") -> bytes:
    return adt_a01(msh4, control_id=control_id, patient="TEST^PATIENT")


def run_explain(
    capsys: pytest.CaptureFixture[str], registry: Path, principal: str, msg_file: str
) -> tuple[int, dict[str, object] | None, str]:
    code = main(["explain", "--registry", str(registry), "--principal", principal, msg_file])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    if code == 0:
        assert len(lines) == 1, out
        doc = json.loads(lines[0])
        assert list(doc) == KEYS
        return code, doc, err
    assert out == ""
    return code, None, err


VERSION = load_registry(SAMPLE).version

# (id, principal, payload, decision, reason, connecting, controller, control id)
CASES: list[tuple[str, str, bytes, str, str | None, str | None, str | None, str | None]] = [
    ("row2", "nobody", message("trustalias{trustalias}", "C2"), "reject", "PRINCIPAL_UNKNOWN", None, None, "C2"),
    ("row3-partner", "printco", message("trustalias{trustalias}", "C3"), "reject", "PRINCIPAL_NOT_ACTIVE", None, None, "C3"),
    ("row3-customer", "dormant-1", message("dormantalias", "C3c"), "reject", "PRINCIPAL_NOT_ACTIVE", None, None, "C3c"),
    ("row4", "mailco", b"this is not HL7\r", "reject", "MALFORMED_HL7", None, None, None),
    ("row5", "mailco", message("", "C5"), "reject", "MSH4_MISSING", None, None, "C5"),
    ("row6", "mailco", message("trustalias", "C6"), "reject", "MSH4_SYNTAX", None, None, "C6"),
    ("row7", "mailco", message("nosuch{trustalias}", "C7"), "reject", "UNKNOWN_CONNECTING_ALIAS", None, None, "C7"),
    ("row8", "mailco", message("trustalias{nosuch}", "C8"), "reject", "UNKNOWN_DATA_CONTROLLER_ALIAS", "trust-1", None, "C8"),
    ("row9", "mailco", message("oldalias{oldalias}", "C9"), "reject", "CUSTOMER_NOT_ACTIVE", "old-1", "old-1", "C9"),
    ("row10-partner", "otherco", message("trustalias{trustalias}", "C10"), "reject", "PARTNER_NOT_AUTHORISED", "trust-1", "trust-1", "C10"),
    ("row10-customer", "trust-1", message("gpalias{gpalias}", "C10c"), "reject", "CUSTOMER_ALIAS_MISMATCH", "gp-1", "gp-1", "C10c"),
    ("row11", "mailco", message("trustalias{gp2alias}", "C11"), "reject", "DELEGATION_NOT_AUTHORISED", "trust-1", "gp-2", "C11"),
    ("accept-partner", "mailco", message("trustalias{trustalias}", "A1"), "accept", None, "trust-1", "trust-1", "A1"),
    ("accept-delegated", "mailco", message("trustalias{gpalias}", "A2"), "accept", None, "trust-1", "gp-1", "A2"),
    ("accept-customer-legacy", "trust-1", message("trustalias", "A3"), "accept", None, "trust-1", "trust-1", "A3"),
]


@pytest.mark.parametrize(
    ("principal", "payload", "decision", "reason", "connecting", "controller", "control_id"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_explain_gives_spec_answer(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    principal: str,
    payload: bytes,
    decision: str,
    reason: str | None,
    connecting: str | None,
    controller: str | None,
    control_id: str | None,
) -> None:
    msg = tmp_path / "msg.hl7"
    msg.write_bytes(payload)
    code, doc, _ = run_explain(capsys, SAMPLE, principal, str(msg))
    assert code == 0
    assert doc == {
        "decision": decision,
        "reason": reason,
        "connecting_customer_id": connecting,
        "data_controller_id": controller,
        "message_control_id": control_id,
        "registry_version": VERSION,
        "dedupe": "not checked",
    }


def test_processing_error_is_reported_as_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_data: bytes) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(decision_module, "read_header", boom)
    msg = tmp_path / "msg.hl7"
    msg.write_bytes(message("trustalias{trustalias}"))
    code, doc, _ = run_explain(capsys, SAMPLE, "mailco", str(msg))
    assert code == 0 and doc is not None
    assert (doc["decision"], doc["reason"]) == ("reject", "PROCESSING_ERROR")


def test_reads_stdin_when_dash(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdin = io.TextIOWrapper(io.BytesIO(message("trustalias{gpalias}", "S1")))
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    code, doc, _ = run_explain(capsys, SAMPLE, "mailco", "-")
    assert code == 0 and doc is not None
    assert (doc["decision"], doc["data_controller_id"], doc["message_control_id"]) == ("accept", "gp-1", "S1")


def test_unreadable_message_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_explain(capsys, SAMPLE, "mailco", str(tmp_path / "missing.hl7"))
    assert code == 2
    assert "cannot read message" in err


def test_invalid_registry_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("customers:\n  - id: trust-1\n    alias: 'not valid'\npartners: []\n")
    msg = tmp_path / "msg.hl7"
    msg.write_bytes(message("trustalias{trustalias}"))
    code, _, err = run_explain(capsys, bad, "mailco", str(msg))
    assert code == 2
    assert "customers[0] (id=trust-1).alias" in err


def test_missing_registry_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_explain(capsys, tmp_path / "nope.yaml", "mailco", "-")
    assert code == 2 and "unreadable" in err


def test_demo_registry_accepts_the_seed_sender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = tmp_path / "seed.hl7"
    msg.write_bytes(message("trustalias{trustalias}"))
    code, doc, _ = run_explain(capsys, DEMO_REGISTRY_PATH, "mailco", str(msg))
    assert code == 0 and doc is not None and doc["decision"] == "accept"
    msg.write_bytes(message("trustalias{gpalias}"))
    code, doc, _ = run_explain(capsys, DEMO_REGISTRY_PATH, "mailco", str(msg))
    assert code == 0 and doc is not None
    assert (doc["decision"], doc["data_controller_id"]) == ("accept", "gp-1")


def test_python_dash_m_processor_explain(tmp_path: Path) -> None:
    msg = tmp_path / "msg.hl7"
    msg.write_bytes(message("trustalias{gp2alias}", "SUB1"))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "processor", "explain", "--registry", str(SAMPLE), "--principal", "mailco", "-"],
        input=msg.read_bytes(),
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == {
        "decision": "reject",
        "reason": "DELEGATION_NOT_AUTHORISED",
        "connecting_customer_id": "trust-1",
        "data_controller_id": "gp-2",
        "message_control_id": "SUB1",
        "registry_version": VERSION,
        "dedupe": "not checked",
    }


def test_charset_option_gives_the_edges_answer_for_a_request_charset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msg_file = tmp_path / "latin1.hl7"
    latin1 = message("trustalias{trustalias}", "L1").replace(b"TEST^PATIENT", "T\u00c9ST".encode("latin-1"))
    msg_file.write_bytes(latin1)
    base = ["explain", "--registry", str(SAMPLE), "--principal", "mailco"]
    answers = []
    for extra in ([], ["--charset", "ISO-8859-1"]):
        assert main([*base, *extra, str(msg_file)]) == 0
        answers.append(json.loads(capsys.readouterr().out)["reason"])
    assert answers == ["MALFORMED_HL7", None]
    assert main([*base, "--charset", "no-such-charset", str(msg_file)]) == 2
    assert "unsupported charset" in capsys.readouterr().err
