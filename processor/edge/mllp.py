"""The edge's MLLP listener (SPEC 4a): HL7 engines' own transport, over TLS with client
certificates, on the edge's event loop next to HTTP.

One connection, in order:

1. the MLLP connection cap (``HL7_MLLP_MAX_CONNECTIONS``), else closed at once;
2. the per-address failed-login lock-out shared with HTTP Basic (``edge.auth``), else closed;
   then at most ``HL7_MLLP_MAX_HANDSHAKES_PER_ADDRESS`` handshakes in progress per address
   (IPv6: its /64), else closed at once;
3. the TLS handshake (``connect_accepted_socket`` on the accepted socket, bounded by
   ``HL7_MLLP_HANDSHAKE_TIMEOUT_SECONDS``): a client certificate chaining to
   ``HL7_MLLP_CLIENT_CA_FILE`` is required. A failed handshake is an authentication failure
   (``tls_handshake``) counted toward the lock-out, and the connection is closed;
4. the certificate's SHA-256 fingerprint names the principal (registry
   ``client_certificates``); unknown (or inactive) is ``unknown_certificate``, counted
   and closed; ``allowed_networks`` applies (``network_not_allowed``, closed);
5. frames (``mllp_frames``) answered one by one, in order, each with one framed ACK from
   the shared :class:`~processor.edge.pipeline.IntakePipeline` (same decision, same raw
   record, ``hl7.transport=mllp``). The principal is looked up again for every message, so
   a certificate removed from the registry (or an address taken out of its
   ``allowed_networks``) stops working at the next message.

Limits: ``HL7_MLLP_IDLE_SECONDS`` without a byte (waiting for a frame or for the client to
read its ACKs) closes the connection; a frame over ``HL7_MAX_BODY_BYTES`` closes it
(counted as a 413, nothing stored); buffered frame bytes come out of the edge-wide body
budget (``edge.admission``), else the connection is closed.

The listener accepts sockets itself and sets TLS up on each one from its first byte
(``loop.connect_accepted_socket(ssl=...)``): every handshake is awaited per connection, so
its failure is seen, counted and attributed to the source address. (Upgrading a plain
stream with ``start_tls`` races on uvloop: it starts reading right after
``connection_made``, so a ClientHello could be consumed as plaintext.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from processor.config import Settings
from processor.edge.admission import Admission
from processor.edge.auth import LoginRateLimiter, source_key
from processor.edge.mllp_frames import FrameReader, frame
from processor.edge.mllp_tls import ServerContexts, certificate_fingerprint, check_mllp_settings
from processor.edge.pipeline import IntakePipeline, no_msh_ack
from processor.errors import BodyTooLarge, NoMshSegment
from processor.metrics import (
    EDGE_AUTH_FAILURES,
    EDGE_LIMIT_REFUSALS,
    EDGE_MLLP_CONNECTIONS,
    EDGE_REQUEST_DURATION,
    EDGE_REQUESTS,
)
from processor.registry.model import Principal, Registry
from processor.registry.networks import address_allowed, client_address

__all__ = ["MllpListener"]

log = logging.getLogger(__name__)

TRANSPORT = "mllp"
_READ_BYTES = 64 * 1024


class MllpListener:
    """Serves MLLP on an already bound socket, in the running event loop."""

    def __init__(
        self,
        settings: Settings,
        registry_source: Callable[[], Registry | None],
        pipeline: IntakePipeline,
        limiter: LoginRateLimiter,
        admission: Admission,
        sock: socket.socket,
    ) -> None:
        check_mllp_settings(settings)
        self._settings = settings
        self._registry_source = registry_source
        self._pipeline = pipeline
        self._limiter = limiter
        self._admission = admission
        self._sock = sock
        self._tls: ServerContexts | None = None
        if not settings.mllp_plaintext:
            assert settings.mllp_tls_certfile and settings.mllp_tls_keyfile and settings.mllp_client_ca_file
            self._tls = ServerContexts(
                settings.mllp_tls_certfile, settings.mllp_tls_keyfile, settings.mllp_client_ca_file
            )
        self._counters: dict[tuple[str, str], Any] = {}
        self._duration = EDGE_REQUEST_DURATION.labels(TRANSPORT)
        self._accepting: asyncio.Task[None] | None = None
        self._open = 0
        self._handshaking: dict[str, int] = {}  # source key -> handshakes in progress
        self._idle: dict[asyncio.Task[None], bool] = {}  # connection task -> waiting for bytes
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._sock.listen(max(128, self._settings.mllp_max_connections))
        self._sock.setblocking(False)
        self._accepting = asyncio.create_task(self._accept_loop(), name="mllp-accept")
        host, port = self.address
        if self._tls is None:
            log.warning(
                "MLLP listening on %s:%d in PLAINTEXT as principal %s: development only",
                host,
                port,
                self._settings.mllp_plaintext_principal,
            )
        else:
            log.info("MLLP over TLS listening on %s:%d", host, port)

    async def stop(self, grace: float) -> None:
        """Stop accepting; close idle connections; let messages in progress get their ACK."""
        self._stopping = True
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.wait([self._accepting], timeout=1.0)
        for task, idle in list(self._idle.items()):
            if idle:
                task.cancel()
        tasks = list(self._idle)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def _accept_loop(self) -> None:
        """Accept sockets ourselves, so each TLS handshake is awaited (and its failure seen and
        counted) per connection: ``create_server(ssl=...)`` would hide failed handshakes."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                log.error("MLLP accept failed: %s", exc.strerror or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._connection(conn, peer))
            self._idle[task] = False

    # -- one connection ----------------------------------------------------------------------
    async def _connection(self, conn: socket.socket, peer: object) -> None:
        task: asyncio.Task[None] | None = asyncio.current_task()
        assert task is not None
        self._open += 1
        EDGE_MLLP_CONNECTIONS.inc()
        writer: asyncio.StreamWriter | None = None
        try:
            host = peer[0] if isinstance(peer, tuple) and peer else ""
            source = client_address(str(host), None, ())
            if self._open > self._settings.mllp_max_connections or self._stopping:
                EDGE_LIMIT_REFUSALS.labels("mllp_connections").inc()
                return
            if self._limiter.retry_after(source, None) is not None:
                EDGE_AUTH_FAILURES.labels("rate_limited").inc()
                return
            key = source_key(source)
            if self._handshaking.get(key, 0) >= self._settings.mllp_max_handshakes_per_address:
                EDGE_LIMIT_REFUSALS.labels("mllp_handshakes").inc()
                return
            self._handshaking[key] = self._handshaking.get(key, 0) + 1
            try:
                opened = await self._open_streams(conn, source)
            finally:
                left = self._handshaking[key] - 1
                if left:
                    self._handshaking[key] = left
                else:
                    del self._handshaking[key]
            if opened is None:
                return
            reader, writer, fingerprint = opened
            await self._serve(reader, writer, source, fingerprint, task)
        except asyncio.CancelledError:
            pass  # stop() closing an idle connection
        except Exception as exc:  # noqa: BLE001 - connection boundary: log the type, never content
            log.error("MLLP connection failed: %s", type(exc).__name__)
        finally:
            self._open -= 1
            self._idle.pop(task, None)
            EDGE_MLLP_CONNECTIONS.dec()
            if writer is not None:
                writer.transport.abort()
            conn.close()

    def _registry(self) -> Registry | None:
        try:
            return self._registry_source()
        except Exception:  # noqa: BLE001 - a watcher with nothing loaded yet may raise
            return None

    def _refuse(self, reason: str, source: str, *, count: bool, why: str = "") -> None:
        EDGE_AUTH_FAILURES.labels(reason).inc()
        if count:
            self._limiter.record_failure(source, None)
        log.info("MLLP connection from %s refused: %s%s", source, reason, f" ({why})" if why else "")

    async def _open_streams(
        self, conn: socket.socket, source: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str | None] | None:
        """Streams over the accepted socket, after the TLS handshake with a client certificate
        when TLS is on: also the certificate's fingerprint. ``None``: refused (counted)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_BYTES, loop=loop)
        tls = self._tls
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                conn,
                ssl=tls.current() if tls is not None else None,
                ssl_handshake_timeout=self._settings.mllp_handshake_timeout_seconds if tls else None,
            )
        except OSError as exc:  # ssl.SSLError, ConnectionError, handshake timeout
            if tls is None:
                return None
            why = getattr(exc, "reason", None) or type(exc).__name__
            self._refuse("tls_handshake", source, count=True, why=why)
            return None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if tls is None:
            return reader, writer, None
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:  # CERT_REQUIRED makes this unreachable; kept as a guard
            transport.abort()
            self._refuse("tls_handshake", source, count=True)
            return None
        return reader, writer, certificate_fingerprint(der)

    def _principal(self, registry: Registry, fingerprint: str | None) -> Principal | None:
        if fingerprint is None:  # plaintext (development)
            principal_id = self._settings.mllp_plaintext_principal
            principal = registry.principal(principal_id) if principal_id else None
        else:
            principal = registry.principal_by_certificate(fingerprint)
        return principal if principal is not None and principal.active else None

    def _authorised(self, source: str, fingerprint: str | None) -> tuple[Registry, Principal] | None:
        """The registry and the principal this connection sends as, or ``None`` (refusal counted
        and logged): no registry, an unknown or inactive principal, an address outside its
        ``allowed_networks``. Checked at the handshake and again for every message."""
        registry = self._registry()
        if registry is None:
            log.warning("MLLP connection from %s closed: registry not loaded", source)
            return None
        principal = self._principal(registry, fingerprint)
        if principal is None:
            self._refuse("unknown_certificate", source, count=fingerprint is not None)
            return None
        if not address_allowed(source, principal.allowed_networks):
            self._refuse("network_not_allowed", source, count=False)
            return None
        return registry, principal

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: str,
        fingerprint: str | None,
        task: asyncio.Task[None],
    ) -> None:
        authorised = self._authorised(source, fingerprint)
        if authorised is None:
            return
        log.info("MLLP connection from %s as principal %s", source, authorised[1].id)
        await self._frames(reader, writer, source, fingerprint, task)

    async def _frames(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: str,
        fingerprint: str | None,
        task: asyncio.Task[None],
    ) -> None:
        settings = self._settings
        frames = FrameReader(settings.max_body_bytes)
        idle = settings.mllp_idle_seconds
        held = 0  # body-budget bytes reserved for this connection
        try:
            while not self._stopping:
                self._idle[task] = True
                try:
                    async with asyncio.timeout(idle):
                        data = await reader.read(_READ_BYTES)
                except TimeoutError:
                    log.info("MLLP connection from %s closed: idle for %ss", source, idle)
                    return
                finally:
                    self._idle[task] = False
                if not data:
                    return
                if not self._admission.reserve(len(data)):
                    EDGE_LIMIT_REFUSALS.labels("body_budget").inc()
                    return
                held += len(data)
                try:
                    messages = frames.feed(data)
                except BodyTooLarge:
                    EDGE_REQUESTS.labels(TRANSPORT, "413", "none").inc()
                    log.info("MLLP connection from %s closed: frame over the body limit", source)
                    return
                for message in messages:
                    reply = await self._one(message, source, fingerprint)
                    if reply is None:
                        return
                    writer.write(frame(reply))
                del messages
                self._admission.release(held - frames.pending)
                held = frames.pending
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(idle):  # a client that never reads its ACKs
                        await writer.drain()
        except TimeoutError:
            log.info("MLLP connection from %s closed: ACKs not read for %ss", source, idle)
        finally:
            self._admission.release(held)

    async def _one(self, message: bytes, source: str, fingerprint: str | None) -> bytes | None:
        """The ACK to one message, or ``None`` to close the connection (principal gone)."""
        started = time.monotonic()
        received_at_us = time.time_ns() // 1000
        ingest_id = str(uuid.uuid4())
        authorised = self._authorised(source, fingerprint)  # again: the registry may have changed
        if authorised is None:
            return None
        registry, principal = authorised
        try:
            done = await self._pipeline.handle(
                message,
                registry,
                principal,
                transport=TRANSPORT,
                source_ip=source,
                received_at_us=received_at_us,
                ingest_id=ingest_id,
            )
        except NoMshSegment:
            log.info("ingest_id=%s principal=%s no MSH segment: not stored, AR", ingest_id, principal.id)
            self._count("400", "AR", started)
            return no_msh_ack(ingest_id, datetime.now(UTC))
        self._count("200" if done.stored else "503", done.code, started)
        return done.ack

    def _count(self, status: str, ack: str, started: float) -> None:
        """One message answered: its request counter (children cached: this runs per message)."""
        counter = self._counters.get((status, ack))
        if counter is None:
            counter = self._counters[(status, ack)] = EDGE_REQUESTS.labels(TRANSPORT, status, ack)
        counter.inc()
        self._duration.observe(time.monotonic() - started)
