"""MLLP settings: what makes a configuration error (SPEC 4a: TLS without a client CA is one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processor.config import Settings, load_settings
from processor.edge.mllp_tls import build_server_context, check_mllp_settings
from processor.errors import ConfigError


def settings(**kw: object) -> Settings:
    return load_settings(mllp_port=0, **kw)


def test_off_without_a_port() -> None:
    check_mllp_settings(load_settings())  # nothing to check


@pytest.mark.parametrize("missing", ["mllp_tls_certfile", "mllp_tls_keyfile", "mllp_client_ca_file"])
def test_tls_needs_certificate_key_and_client_ca(missing: str) -> None:
    files = {"mllp_tls_certfile": "/c.pem", "mllp_tls_keyfile": "/k.pem", "mllp_client_ca_file": "/ca.pem"}
    del files[missing]
    with pytest.raises(ConfigError, match=f"HL7_{missing.upper()}"):
        check_mllp_settings(settings(**files))


def test_plaintext_needs_a_principal() -> None:
    with pytest.raises(ConfigError, match="HL7_MLLP_PLAINTEXT_PRINCIPAL"):
        check_mllp_settings(settings(mllp_plaintext=True))
    check_mllp_settings(settings(mllp_plaintext=True, mllp_plaintext_principal="mailco"))


def test_unreadable_files_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certificate/key not usable"):
        build_server_context(tmp_path / "none.pem", tmp_path / "none.key", tmp_path / "ca.pem")


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HL7_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.mllp_port, s.mllp_host, s.mllp_plaintext) == (None, None, False)
    assert (s.mllp_idle_seconds, s.mllp_handshake_timeout_seconds, s.mllp_max_connections) == (300.0, 10.0, 256)


def test_certificate_rotation_keeps_the_old_context_until_the_new_files_load(tmp_path: Path) -> None:
    from processor.edge.mllp_tls import ServerContexts
    from tests.integration.edge.mllp_kit import make_cert

    ca = make_cert("ca", ca=True)
    cert, key = make_cert("127.0.0.1", issuer=ca, server=True).write(tmp_path, "server")
    bundle, _ = ca.write(tmp_path, "clients")
    now = [0.0]
    contexts = ServerContexts(cert, key, bundle, clock=lambda: now[0])
    first = contexts.current()
    assert first.minimum_version.name == "TLSv1_2" and first.verify_mode.name == "CERT_REQUIRED"

    cert.write_text("half-written")  # a rotation in progress: refused, the old context stays
    now[0] += 0.5
    assert contexts.current() is first  # not looked at yet (at most once a second)
    now[0] += 1.0
    assert contexts.current() is first and contexts.reloads == 0

    make_cert("127.0.0.1", issuer=ca, server=True).write(tmp_path, "server")
    now[0] += 1.0
    rotated = contexts.current()
    assert rotated is not first and contexts.reloads == 1
    now[0] += 1.0
    assert contexts.current() is rotated  # unchanged files: no rebuild
