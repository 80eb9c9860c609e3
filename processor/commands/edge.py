"""``hl7-processor edge``: the HTTP/SOAP edge receiver alone, in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from processor.config import load_settings
from processor.errors import ConfigError, RegistryInvalid

__all__ = ["main"]

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(edge_host=getattr(args, "host", None), edge_port=getattr(args, "port", None))
    if not settings.registry_file:
        print("hl7-processor edge: HL7_REGISTRY_FILE is not set (the edge needs a registry)", file=sys.stderr)
        return 2
    if not settings.kafka_bootstrap_servers:
        print("hl7-processor edge: HL7_KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2

    from processor.edge.server import run_edge  # heavy imports only when the command runs
    from processor.registry.watcher import RegistryWatcher

    try:
        watcher = RegistryWatcher(settings.registry_file, settings.registry_reload_seconds)
    except (RegistryInvalid, OSError) as exc:
        print(f"hl7-processor edge: registry unusable: {exc}", file=sys.stderr)
        return 2
    watcher.start()
    try:
        run_edge(settings, lambda: watcher.current)
    except ConfigError as exc:
        print(f"hl7-processor edge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. port already in use
        print(
            f"hl7-processor edge: cannot listen on {settings.edge_host}:{settings.edge_port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        watcher.stop()
    return 0
