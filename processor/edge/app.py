"""The edge receiver's ASGI application (Starlette): HTTP/SOAP in, ``hl7.raw`` out.

Request path for ``POST /hl7`` and ``POST /soap``, cheapest refusals first (the
connection-level limits of ``processor.edge.limits`` apply before any of this):

1. a request-in-progress slot (``processor.edge.admission``), else 503;
2. registry loaded, else 503;
3. HTTP Basic login (``processor.edge.basic_login``): lock-out 429, credentials 401,
   ``allowed_networks`` 403;
4. content type, else 415; body read within the body-bytes budget (else 503) with a
   running byte count, else 413;
5. SOAP unwrapping (``/soap``, off the event loop on a bounded pool), then the pipeline
   shared with MLLP (``processor.edge.pipeline``): decision rows 4-11, store, ACK.

Nothing here logs message content: log lines carry the ingest id, principal id,
status and ACK code only; unexpected exceptions are logged by type.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio import CapacityLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from processor.config import Settings
from processor.edge.admission import Admission, read_body
from processor.edge.auth import LoginRateLimiter
from processor.edge.basic_login import BasicLogin, Refusal
from processor.edge.intake import (
    HL7_MEDIA_TYPES,
    SOAP_MEDIA_TYPES,
    ack_content_type,
    ack_text,
    parse_media_type,
)
from processor.edge.limits import RETRY_AFTER_BUSY
from processor.edge.mllp import MllpListener
from processor.edge.pipeline import IntakePipeline
from processor.edge.publisher import KafkaPublisher
from processor.edge.replies import SOAP_CONTENT_TYPE, TEXT, Reply, error_reply
from processor.errors import (
    BadLength,
    BodyTooLarge,
    NoMshSegment,
    OverBudget,
    SoapError,
)
from processor.health import Readiness, render_status
from processor.hl7.charset import charset_from_http
from processor.hl7.soap import (
    build_accept_response,
    build_wsdl,
    message_bytes,
    parse_accept_message,
)
from processor.metrics import EDGE_LIMIT_REFUSALS, EDGE_REQUEST_DURATION, EDGE_REQUESTS
from processor.registry.credentials import Authenticator
from processor.registry.model import Principal, Registry
from processor.registry.networks import client_address

__all__ = ["create_app", "RegistrySource"]

log = logging.getLogger(__name__)

RegistrySource = Callable[[], Registry | None]

_RETRY_AFTER_UNAVAILABLE = "5"
# metric label for requests refused before a handler runs (404/405)
_PATH_TRANSPORT = {"/hl7": "http", "/soap": "soap"}


def _registry_or_none(source: RegistrySource) -> Registry | None:
    try:
        return source()
    except Exception:  # noqa: BLE001 - a watcher that has nothing yet may raise instead of returning None
        return None


class _Edge:
    """Request handlers sharing the registry source, authenticator, limiter and publisher."""

    def __init__(
        self,
        settings: Settings,
        registry_source: RegistrySource,
        authenticator: Authenticator,
        publisher: KafkaPublisher,
    ) -> None:
        self.settings, self.registry_source, self.publisher = settings, registry_source, publisher
        self.pipeline = IntakePipeline(settings, publisher)
        self.limiter = LoginRateLimiter(
            settings.login_failures_per_minute,
            settings.login_lockout_seconds,
            known_address_seconds=settings.login_known_address_seconds,
        )
        self.trusted = settings.trusted_proxy_list
        self.login = BasicLogin(authenticator, self.limiter)
        self.admission = Admission(
            settings.edge_max_requests_in_progress, settings.edge_max_buffered_body_bytes
        )
        self.soap_pool = CapacityLimiter(max(1, settings.soap_workers))
        # SPEC 4: readiness is "registry loaded and process healthy", never Kafka. During a
        # broker outage the edge must stay in the load balancer and answer 503 + AE itself.
        self.readiness = Readiness()
        self.readiness.add("registry", lambda: _registry_or_none(registry_source) is not None)

    # -- endpoints ---------------------------------------------------------------------------
    async def hl7(self, request: Request) -> Response:
        return await self._post(request, "http")

    async def soap(self, request: Request) -> Response:
        return await self._post(request, "soap")

    async def soap_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.soap(request)
        return await self.soap_get(request)

    async def soap_get(self, request: Request) -> Response:
        started = time.monotonic()
        if "wsdl" in {k.lower() for k in request.query_params.keys()}:
            reply = Reply(200, build_wsdl(self._endpoint_url(request)), SOAP_CONTENT_TYPE)
        else:
            reply = error_reply("soap", 400, "GET is only for ?wsdl; POST SOAP requests")
        return self._finish(reply, "soap", started, body_consumed=True)

    async def bench_ping(self, request: Request) -> Response:
        """Ceiling for the benchmark: the same auth and body reading, no HL7, no Kafka."""
        started = time.monotonic()
        principal_or_reply = await self._authenticate(request, "http")
        if isinstance(principal_or_reply, Reply):
            return self._finish(principal_or_reply, "other", started, body_consumed=False)
        held = [0]
        try:
            body = await self._read_body(request, held)
        finally:
            self.admission.release(held[0])
        return self._finish(Reply(200, b"ok %d\n" % len(body), TEXT), "other", started, body_consumed=True)

    async def livez(self, request: Request) -> Response:
        return Response(b"ok\n", 200, media_type=TEXT)

    async def readyz(self, request: Request) -> Response:
        # Kafka is reported, never required: see the readiness note in __init__.
        status, body = render_status(*self.readiness.status(), info={"kafka": self.publisher.ready})
        return Response(body, status, media_type="application/json")

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), 200, media_type=CONTENT_TYPE_LATEST)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """404 / 405 (with its ``Allow`` header); on ``/soap`` as a SOAP Fault like every
        other HTTP-level error there."""
        status = getattr(exc, "status_code", 404)
        transport = _PATH_TRANSPORT.get(request.url.path, "other")
        EDGE_REQUESTS.labels(transport, str(status), "none").inc()
        reply = error_reply(
            "soap" if transport == "soap" else "http",
            status,
            "Not Found" if status == 404 else "Method Not Allowed",
            **dict(getattr(exc, "headers", None) or {}),
        )
        return Response(reply.body, reply.status, headers=dict(reply.headers), media_type=reply.media_type)

    # -- the intake path ---------------------------------------------------------------------
    async def _post(self, request: Request, transport: str) -> Response:
        started = time.monotonic()
        received_at_us = time.time_ns() // 1000
        ingest_id = str(uuid.uuid4())
        state = {"body_consumed": False}
        if not self.admission.try_enter():
            EDGE_LIMIT_REFUSALS.labels("requests_in_progress").inc()
            reply = error_reply(transport, 503, "Busy, retry later", **{"Retry-After": RETRY_AFTER_BUSY})
            return self._finish(reply, transport, started, body_consumed=False)
        held = [0]  # body bytes reserved from the admission budget
        try:
            reply = await self._intake(request, transport, ingest_id, received_at_us, state, held)
        except ClientDisconnect:  # gone mid-body (or closed by a connection limit): nobody to answer
            log.info("ingest_id=%s client disconnected before its body was read: not stored", ingest_id)
            reply = error_reply(transport, 400, "Client disconnected")
        except Exception as exc:  # noqa: BLE001 - request boundary: never a traceback to the client, never content in the log
            log.error("edge request failed: %s ingest_id=%s", type(exc).__name__, ingest_id)
            reply = error_reply(
                transport, 500, "Internal error: the message was not acknowledged, retry later"
            )
        finally:
            self.admission.release(held[0])
            self.admission.leave()
        return self._finish(reply, transport, started, body_consumed=state["body_consumed"])

    def _finish(self, reply: Reply, transport: str, started: float, *, body_consumed: bool) -> Response:
        EDGE_REQUESTS.labels(transport, str(reply.status), reply.ack).inc()
        EDGE_REQUEST_DURATION.labels(transport).observe(time.monotonic() - started)
        headers = dict(reply.headers)
        if not body_consumed:
            # Unread request bytes would be drained on a kept-alive connection: close it instead.
            headers["Connection"] = "close"
        return Response(reply.body, reply.status, headers=headers, media_type=reply.media_type)

    async def _read_body(self, request: Request, held: list[int]) -> bytes:
        """The body within the per-request limit and the edge-wide budget (``held[0]``: bytes
        reserved, released by the caller)."""
        return await read_body(
            request.stream(),
            request.headers.get("content-length"),
            self.settings.max_body_bytes,
            self.admission,
            held,
        )

    async def _authenticate(self, request: Request, transport: str) -> Principal | Reply:
        if _registry_or_none(self.registry_source) is None:
            return error_reply(
                transport, 503, "Service unavailable", **{"Retry-After": _RETRY_AFTER_UNAVAILABLE}
            )
        peer = request.client.host if request.client else ""
        # Every X-Forwarded-For line, in order: a proxy that appends its own line after
        # one the client sent must not have the client's line read as the whole list.
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
        source = client_address(peer, forwarded, self.trusted)
        request.state.source_ip = source
        checked = await self.login.check(request.headers.get("authorization"), source)
        if isinstance(checked, Refusal):
            return error_reply(transport, checked.status, checked.message, **checked.headers)
        return checked

    async def _intake(
        self,
        request: Request,
        transport: str,
        ingest_id: str,
        received_at_us: int,
        state: dict[str, bool],
        held: list[int],
    ) -> Reply:
        principal = await self._authenticate(request, transport)
        if isinstance(principal, Reply):
            return principal
        media = parse_media_type(request.headers.get("content-type"))
        allowed = SOAP_MEDIA_TYPES if transport == "soap" else HL7_MEDIA_TYPES
        if media is None or media.type not in allowed:
            return error_reply(transport, 415, "Unsupported content type")
        try:
            body = await self._read_body(request, held)
        except BodyTooLarge:
            return error_reply(transport, 413, "Request body too large")
        except BadLength:
            return error_reply(transport, 400, "Bad Content-Length")
        except OverBudget:
            EDGE_LIMIT_REFUSALS.labels("body_budget").inc()
            return error_reply(transport, 503, "Busy, retry later", **{"Retry-After": RETRY_AFTER_BUSY})
        state["body_consumed"] = True

        default_charset = None
        if transport == "soap":
            try:
                # Off the event loop, a bounded number at a time: a large envelope must not
                # stall every other request (expat holds the GIL, but the loop still gets turns).
                payload = await anyio.to_thread.run_sync(
                    _unwrap_soap, body, media.charset, limiter=self.soap_pool
                )
            except SoapError:
                return error_reply(transport, 400, "Not a valid acceptMessage request")
            del body
        else:
            payload = body
            # A charset on the request applies when MSH-18 is empty; one we do not
            # support is ignored (the MSH-18 / UTF-8 rules then decide, as without it).
            default_charset = charset_from_http(media.charset) if media.charset else None

        registry = _registry_or_none(self.registry_source)
        if registry is None:
            return error_reply(
                transport, 503, "Service unavailable", **{"Retry-After": _RETRY_AFTER_UNAVAILABLE}
            )
        try:
            done = await self.pipeline.handle(
                payload,
                registry,
                principal,
                transport=transport,
                source_ip=request.state.source_ip,
                received_at_us=received_at_us,
                ingest_id=ingest_id,
                default_charset=default_charset,
            )
        except NoMshSegment:
            log.info("ingest_id=%s principal=%s no MSH segment: not stored", ingest_id, principal.id)
            return error_reply(transport, 400, "No MSH segment found")
        status = 200 if done.stored else 503
        headers = {} if done.stored else {"Retry-After": _RETRY_AFTER_UNAVAILABLE}
        header = done.intake.header
        if transport == "soap":
            body = build_accept_response(ack_text(done.ack, header))
            return Reply(status, body, SOAP_CONTENT_TYPE, done.code, headers)
        # The request's media type, with the charset the ACK bytes are really in (MSH-18).
        headers["Content-Type"] = ack_content_type(media, header)
        return Reply(status, done.ack, None, done.code, headers)

    def _endpoint_url(self, request: Request) -> str:
        """The WSDL's endpoint: ``HL7_EDGE_PUBLIC_URL`` + ``/soap``, else the address of the
        socket the request arrived on (scheme from the connection's TLS state).

        Never from ``Host`` or ``X-Forwarded-Host``: anyone can send those, and a WSDL
        pointing at ``http://evil.example/soap`` would send partners' credentials there.
        Behind a proxy the socket address is an internal one: set ``HL7_EDGE_PUBLIC_URL``.
        """
        if self.settings.edge_public_url:
            return self.settings.edge_public_url.rstrip("/") + "/soap"
        server = request.scope.get("server") or (self.settings.edge_host, self.settings.edge_port)
        host, port = str(server[0]), server[1]
        if ":" in host:
            host = f"[{host}]"
        return f"{request.url.scheme}://{host}:{port}/soap" if port else f"{request.url.scheme}://{host}/soap"


def _unwrap_soap(body: bytes, charset: str | None) -> bytes:
    return message_bytes(parse_accept_message(body, charset))


def create_app(
    settings: Settings,
    registry_source: RegistrySource,
    *,
    authenticator: Authenticator | None = None,
    publisher: KafkaPublisher | None = None,
    bench: bool = False,
    mllp_socket: socket.socket | None = None,
) -> Starlette:
    """The edge ASGI app. Its lifespan starts the Kafka publisher and, at shutdown
    (after uvicorn has finished in-flight requests), flushes it within a bound.

    ``mllp_socket``: a bound socket for the MLLP listener (``processor.edge.mllp``), served
    on the same event loop from the same lifespan, with the same pipeline, lock-out and body
    budget (``app.state.mllp``). Its TLS files are checked here (``ConfigError``).

    ``bench=True`` adds ``POST /bench/ping``: authenticated, reads the body, no HL7/Kafka.
    """

    def current_registry() -> Registry:
        registry = _registry_or_none(registry_source)
        if registry is None:
            raise RuntimeError("registry not loaded")
        return registry

    auth = authenticator or Authenticator(current_registry, workers=settings.argon2_workers)
    pub = publisher or KafkaPublisher(settings)
    edge = _Edge(settings, registry_source, auth, pub)
    mllp = None
    if mllp_socket is not None:
        mllp = MllpListener(
            settings, registry_source, edge.pipeline, edge.limiter, edge.admission, mllp_socket
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pub.start()
        try:
            if mllp is not None:
                await mllp.start()
            yield
        finally:
            if mllp is not None:  # messages in progress still get their ACK, then Kafka is flushed
                await mllp.stop(settings.publish_timeout_seconds + 2.0)
            await anyio.to_thread.run_sync(pub.close, settings.publish_timeout_seconds)
            if authenticator is None:
                auth.close()

    routes = [
        Route("/hl7", edge.hl7, methods=["POST"]),
        # One route for both methods, so a 405 on /soap names both in its Allow header.
        Route("/soap", edge.soap_endpoint, methods=["GET", "POST"]),
        Route("/metrics", edge.metrics, methods=["GET"]),
        Route("/livez", edge.livez, methods=["GET"]),
        Route("/healthz", edge.livez, methods=["GET"]),
        Route("/readyz", edge.readyz, methods=["GET"]),
    ]
    if bench:
        routes.append(Route("/bench/ping", edge.bench_ping, methods=["POST"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: edge.not_found, 405: edge.not_found},
    )
    app.state.edge = edge
    app.state.mllp = mllp
    return app
