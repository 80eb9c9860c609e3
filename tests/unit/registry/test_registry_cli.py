"""``hl7-processor registry hash-password`` and ``registry check``."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from processor.cli import main
from processor.registry.loader import DEMO_REGISTRY_PATH, load_registry


class FakeStdin(io.TextIOWrapper):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(io.BytesIO(text.encode()))
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def answers(values: list[str]) -> Callable[[str], str]:
    it: Iterator[str] = iter(values)

    def fake_getpass(prompt: str = "") -> str:  # noqa: ARG001
        return next(it)

    return fake_getpass


def test_hash_password_from_pipe(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin("s3cret pass\nignored\n", tty=False))
    assert main(["registry", "hash-password"]) == 0
    out, _ = capsys.readouterr()
    phc = out.strip()
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(phc, "s3cret pass")
    assert "s3cret" not in out


def test_hash_password_on_a_terminal_asks_twice_without_echo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin("", tty=True))
    monkeypatch.setattr("getpass.getpass", answers(["pw-1", "pw-1"]))
    assert main(["registry", "hash-password"]) == 0
    assert PasswordHasher().verify(capsys.readouterr().out.strip(), "pw-1")


def test_hash_password_mismatch_on_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin("", tty=True))
    monkeypatch.setattr("getpass.getpass", answers(["pw-1", "pw-2"]))
    assert main(["registry", "hash-password"]) == 2  # unusable input
    out, err = capsys.readouterr()
    assert out == "" and err == "hl7-processor: registry hash-password: passwords differ\n"


def test_hash_password_refuses_empty(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin("\n", tty=False))
    assert main(["registry", "hash-password"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "hl7-processor: registry hash-password: empty password refused\n"


def test_check_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "check", str(DEMO_REGISTRY_PATH)]) == 0
    out, err = capsys.readouterr()
    version = load_registry(DEMO_REGISTRY_PATH).version
    assert f"registry_version {version}" in out
    assert "2 customer(s)" in out and "1 partner(s)" in out
    assert err == ""  # demo hashes use the production parameters: no weak-hash warning


def test_check_warns_about_weak_hashes(capsys: pytest.CaptureFixture[str], sample_path: Path) -> None:
    assert main(["registry", "check", str(sample_path)]) == 0
    err = capsys.readouterr().err
    assert "partners (id=mailco).password_hash: argon2id m=8,t=1,p=1 is below" in err


def test_check_invalid_file_names_entry_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: dict[str, Any],
    to_bytes: Callable[[dict[str, Any]], bytes],
) -> None:
    document["customers"].append({"id": "trust-9", "alias": "bad alias!"})
    document["partners"][0]["authorised_by"] = ["trust-1", "ghost"]
    path = tmp_path / "bad.yaml"
    path.write_bytes(to_bytes(document))
    assert main(["registry", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "2 error(s)" in err
    assert "customers[2] (id=trust-9).alias: must match" in err
    assert "partners[0] (id=mailco).authorised_by[1]: unknown customer id 'ghost'" in err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "unreadable" in capsys.readouterr().err
