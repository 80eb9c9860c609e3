"""Async bridge to one idempotent confluent-kafka producer per process.

``publish()`` returns only when Kafka's delivery report says the record is
stored with ``acks=all`` (the precondition of an accepting ACK), and raises
``KafkaUnavailable`` otherwise. The event loop never blocks:

* ``produce()`` only enqueues; a full local queue (``BufferError``) is retried
  with ``asyncio.sleep`` until the publish deadline;
* a daemon thread runs ``producer.poll()``; delivery callbacks only append to a
  list, and after each ``poll()`` the batch goes to the event loop with one
  ``call_soon_threadsafe`` (one loop wake-up per batch, not per record);
* ``message.timeout.ms`` is the publish timeout, so every record gets a delivery
  report (success or ``_MSG_TIMED_OUT``) within a bounded time; an
  ``asyncio`` deadline slightly above it is the belt to those braces.

Readiness comes from a ``PeriodicCheck`` that asks the cluster for the raw
topic's metadata every few seconds on its own thread; a fatal producer error
(idempotence state lost) is healed by replacing the producer on that thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from processor.config import Settings
from processor.errors import KafkaUnavailable
from processor.health import PeriodicCheck
from processor.kafka.client_config import producer_config
from processor.metrics import EDGE_PUBLISH_DURATION

__all__ = ["KafkaPublisher"]

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]

# How long the asyncio side waits beyond message.timeout.ms before giving up itself.
_DEADLINE_SLACK_S = 2.0
_BUFFER_FULL_BACKOFF_S = (0.005, 0.1)


_Result = tuple[asyncio.Future[None], "KafkaError | None"]


def _resolve_all(results: list[_Result]) -> None:
    """Runs on the event loop: complete the futures of one batch of delivery reports."""
    for future, error in results:
        if future.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaUnavailable(f"delivery failed: {error.name()}"))


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(KafkaUnavailable("no delivery report in time"))


class KafkaPublisher:
    """Produces raw records and awaits their delivery reports."""

    def __init__(
        self,
        settings: Settings,
        *,
        health_interval: float = 2.0,
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
        **producer_overrides: Any,
    ) -> None:
        self._settings = settings
        self._timeout_s = float(settings.publish_timeout_seconds)
        timeout_ms = max(1, int(self._timeout_s * 1000))
        # Every request waits for its own delivery report, so linger is pure latency here
        # (closed loop: 32 clients at linger 5 ms ran ~3x slower than at 1 ms in
        # bench/bench_edge.py); records still batch while earlier requests are in flight.
        # An operator's HL7_KAFKA_LINGER_MS wins.
        latency_first = {} if "linger.ms" in settings.kafka_extra else {"linger.ms": 1}
        self._config = producer_config(
            settings,
            **{
                **latency_first,
                "message.timeout.ms": timeout_ms,
                # a request that cannot finish within the publish timeout is pointless
                "request.timeout.ms": min(30_000, timeout_ms),
                "error_cb": self._on_error,
                **producer_overrides,
            },
        )
        self._factory = producer_factory
        self._producer: Producer | None = None
        self._fatal = False
        self._results: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], KafkaError | None]] = []
        self._results_lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_thread: threading.Thread | None = None
        self._check = PeriodicCheck("kafka", self._probe, interval=health_interval)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Create the producer and start the poll and health threads (idempotent)."""
        if self._producer is not None:
            return
        self._producer = self._factory(self._config)
        self._stop.clear()
        self._poll_thread = threading.Thread(target=self._poll_loop, name="edge-kafka-poll", daemon=True)
        self._poll_thread.start()
        self._check.start()

    def close(self, timeout: float = 10.0) -> int:
        """Flush outstanding records (bounded), stop the threads; returns records left undelivered."""
        producer = self._producer
        self._check.stop()
        left = 0
        if producer is not None:
            left = producer.flush(max(0.0, timeout))
            if left:
                log.warning("producer closed with %d records undelivered", left)
        self._stop.set()
        if self._poll_thread is not None:
            self._poll_thread.join(5.0)
            self._poll_thread = None
        self._producer = None
        return left

    @property
    def ready(self) -> bool:
        """Kafka answered a metadata request for the raw topic recently."""
        return self._producer is not None and not self._fatal and self._check.ok

    # -- publishing --------------------------------------------------------------------------
    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        """Store one record; returns after ``acks=all`` success, else raises ``KafkaUnavailable``."""
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("publisher not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _msg: object) -> None:
            with self._results_lock:
                self._results.append((loop, future, error))

        started = time.monotonic()
        deadline = started + self._timeout_s
        backoff = _BUFFER_FULL_BACKOFF_S[0]
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
                break
            except BufferError:
                if time.monotonic() + backoff > deadline:
                    raise KafkaUnavailable("local producer queue full") from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BUFFER_FULL_BACKOFF_S[1])
            except KafkaException as exc:
                self._check.poke()
                raise KafkaUnavailable(f"produce refused: {_code_name(exc)}") from None
        # A plain timer instead of asyncio.wait_for: same bound, less work per request.
        timer = loop.call_later(self._timeout_s + _DEADLINE_SLACK_S, _expire, future)
        try:
            await future
        except KafkaUnavailable:
            self._check.poke()
            raise
        finally:
            timer.cancel()
        EDGE_PUBLISH_DURATION.observe(time.monotonic() - started)

    # -- threads -----------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                break
            try:
                producer.poll(0.05)
            except Exception as exc:  # noqa: BLE001 - thread boundary: a callback raising must not kill delivery reports
                log.error("producer poll failed: %s", type(exc).__name__)
            self._dispatch()
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand the delivery reports collected so far to their event loops, one call per loop."""
        with self._results_lock:
            if not self._results:
                return
            results, self._results = self._results, []
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for loop, future, error in results:
            by_loop.setdefault(loop, []).append((future, error))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, batch)
            except RuntimeError:  # loop already closed during shutdown: nobody is waiting
                pass

    def _on_error(self, error: KafkaError) -> None:
        # Runs inside poll(). Transport errors while a broker is down are expected and
        # retried by librdkafka; only a fatal error needs a new producer.
        if error.fatal():
            log.error("fatal producer error %s; the producer will be replaced", error.name())
            self._fatal = True
            self._check.poke()
        else:
            log.debug("producer error %s", error.name())

    def _probe(self) -> bool:
        if self._fatal:
            self._replace_producer()
        producer = self._producer
        if producer is None:
            return False
        topic = self._settings.topic_raw
        metadata = producer.list_topics(topic=topic, timeout=max(1.0, min(5.0, self._timeout_s)))
        info = metadata.topics.get(topic)
        return bool(metadata.brokers) and info is not None and info.error is None and bool(info.partitions)

    def _replace_producer(self) -> None:
        old = self._producer
        self._producer = self._factory(self._config)
        self._fatal = False
        if old is not None:
            try:  # fail what the dead producer still holds, so no request waits for nothing
                old.purge()
                old.flush(0)
            except Exception as exc:  # noqa: BLE001 - the old producer is being discarded anyway
                log.warning("purging the old producer failed: %s", type(exc).__name__)
        log.warning("producer replaced after a fatal error")


def _code_name(exc: KafkaException) -> str:
    if exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].name())
    return type(exc).__name__
