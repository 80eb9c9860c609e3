"""``hl7-processor stream``: one exactly-once processor (a consumer-group member).

Exit codes: 0 after a clean stop (SIGTERM/SIGINT: the batch in hand is committed
and the group left), 1 on a fatal Kafka error (e.g. fenced by a newer instance
with the same transactional id), 2 on unusable configuration.
"""

from __future__ import annotations

import argparse
import logging

from processor.config import load_settings, require
from processor.shutdown import on_shutdown_signal
from processor.stream.metrics_server import start_metrics_server
from processor.stream.processor import StreamProcessor

__all__ = ["main"]

log = logging.getLogger("processor.stream")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(
        metrics_port=getattr(args, "metrics_port", None),
        transactional_id=getattr(args, "transactional_id", None),
    )
    require(settings, "kafka_bootstrap_servers", "registry_file")

    from processor.registry.watcher import RegistryWatcher

    # A refused registry (InputError) or a fatal Kafka error (StreamFatalError, a
    # RuntimeFailure) goes on to processor.cli: one "hl7-processor: ..." line, exit 2 / 1.
    assert settings.registry_file is not None  # require() above
    watcher = RegistryWatcher(settings.registry_file, settings.registry_reload_seconds)
    processor = StreamProcessor(settings, watcher)

    def _stop() -> None:  # on a thread of its own, never inside the signal handler
        log.info("finishing the open batch, then stopping")
        processor.stop()

    on_shutdown_signal(_stop)

    try:
        server = start_metrics_server(
            settings.metrics_port, live=processor.live, readiness=processor.readiness
        )
    except OSError as exc:
        log.error("cannot serve metrics on port %s: %s", settings.metrics_port, exc.strerror)
        return 2
    watcher.start()
    try:
        processor.run()
    finally:
        server.close()
        watcher.stop()
    return 0
