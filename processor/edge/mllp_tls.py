"""TLS for the MLLP listener: the server context, reloaded when its files change, and the
client certificate's fingerprint (SPEC 4a).

The context requires a client certificate that chains to ``HL7_MLLP_CLIENT_CA_FILE``
(``CERT_REQUIRED``), TLS 1.2 at least. :class:`ServerContexts` checks the certificate,
key and CA files' modification times (at most once a second, when a connection is
accepted) and builds a new context when one changed: each new connection uses the
current one, connections already open keep theirs. A changed set of files that does not
load (a half-written rotation, a key that does not match) is refused and logged, and the
previous context stays in force until the files are fixed.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from processor.config import Settings
from processor.errors import ConfigError

__all__ = ["ServerContexts", "certificate_fingerprint", "build_server_context", "check_mllp_settings"]

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 1.0


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, 64 lower-case hex digits (the registry's normal form)."""
    return hashlib.sha256(der).hexdigest()


def check_mllp_settings(settings: Settings) -> None:
    """``ConfigError`` for an MLLP configuration that cannot work (checked at start-up)."""
    if settings.mllp_port is None:
        return
    if settings.mllp_plaintext:
        if not settings.mllp_plaintext_principal:
            raise ConfigError("HL7_MLLP_PLAINTEXT=true needs HL7_MLLP_PLAINTEXT_PRINCIPAL (a registry id)")
        return
    missing = [
        f"HL7_{name.upper()}"
        for name in ("mllp_tls_certfile", "mllp_tls_keyfile", "mllp_client_ca_file")
        if not getattr(settings, name)
    ]
    if missing:
        raise ConfigError(
            f"MLLP over TLS needs {', '.join(missing)} (or HL7_MLLP_PLAINTEXT=true, development only)"
        )


def build_server_context(certfile: Path, keyfile: Path, cafile: Path) -> ssl.SSLContext:
    """Server context: TLS >= 1.2, client certificate required and verified against ``cafile``.

    Raises ``ConfigError`` when a file is unreadable or the certificate and key do not match.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(str(certfile), str(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"MLLP TLS certificate/key not usable: {_why(exc)}") from None
    try:
        context.load_verify_locations(cafile=str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"HL7_MLLP_CLIENT_CA_FILE not usable: {_why(exc)}") from None
    if not context.get_ca_certs():
        raise ConfigError("HL7_MLLP_CLIENT_CA_FILE holds no certificate")
    return context


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__


class ServerContexts:
    """The current server context, rebuilt when the certificate, key or CA file changes."""

    def __init__(
        self,
        certfile: Path,
        keyfile: Path,
        cafile: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = (Path(certfile), Path(keyfile), Path(cafile))
        self._clock = clock
        self._stamp = self._stamps()
        self._context = build_server_context(*self._files)  # ConfigError at start-up
        self._checked = clock()
        self.reloads = 0

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self._files:
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, -1))
        return tuple(out)

    def current(self) -> ssl.SSLContext:
        """The context for a new connection (files re-checked at most once a second)."""
        now = self._clock()
        if now - self._checked >= _CHECK_EVERY_S:
            self._checked = now
            stamp = self._stamps()
            if stamp != self._stamp:
                self._reload(stamp)
        return self._context

    def _reload(self, stamp: tuple[tuple[int, int], ...]) -> None:
        try:
            context = build_server_context(*self._files)
        except ConfigError as exc:
            # Kept unchanged: the next check retries (a rotation may be half-written).
            log.error("MLLP TLS files changed but do not load, previous certificate kept: %s", exc)
            return
        self._context, self._stamp = context, stamp
        self.reloads += 1
        log.info("MLLP TLS certificate reloaded")
