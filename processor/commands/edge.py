"""``hl7-processor edge``: the HTTP/SOAP edge receiver alone, in the foreground; also MLLP
(SPEC 4a) when ``HL7_MLLP_PORT`` is set.

Failures reach ``processor.cli`` as exceptions: exit 2 for configuration (a setting
unset, the registry unusable), 1 when the edge cannot listen.
"""

from __future__ import annotations

import argparse

from processor.config import load_settings, require
from processor.errors import CommandFailed

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    settings = load_settings(edge_host=getattr(args, "host", None), edge_port=getattr(args, "port", None))
    require(settings, "registry_file", "kafka_bootstrap_servers")
    assert settings.registry_file is not None  # for the type checker: require() checked it

    from processor.edge.server import run_edge  # heavy imports only when the command runs
    from processor.registry.watcher import RegistryWatcher

    watcher = RegistryWatcher(settings.registry_file, settings.registry_reload_seconds)
    watcher.start()
    try:
        run_edge(settings, lambda: watcher.current)
    except OSError as exc:  # e.g. port already in use
        where = f"{settings.edge_host}:{settings.edge_port}"
        if settings.mllp_port is not None:
            where += f" (MLLP {settings.mllp_host or settings.edge_host}:{settings.mllp_port})"
        raise CommandFailed(f"edge: cannot listen on {where}: {exc.strerror or exc}") from None
    finally:
        watcher.stop()
    return 0
