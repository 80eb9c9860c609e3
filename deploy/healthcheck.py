#!/usr/bin/env python3
"""Container health probe shared by the edge and processor containers.

The slim runtime image has no curl or wget, and the same image runs the edge
(HTTP on ``HL7_EDGE_PORT``) and the processor (``/livez`` and ``/readyz`` on
``HL7_METRICS_PORT``). So one stdlib-only probe tries both ports on loopback:
healthy when either answers 200 on the given path (``/livez`` by default).
Exit status 0 = healthy, 1 = unhealthy, as Docker's HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["candidate_ports", "probe", "main"]

DEFAULT_PATH = "/livez"
# Loopback only: never route the probe through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def candidate_ports(environ: Mapping[str, str]) -> list[int]:
    """Ports to try, edge first: from the same variables the app reads."""
    ports: list[int] = []
    for name, default in (("HL7_EDGE_PORT", "8080"), ("HL7_METRICS_PORT", "9464")):
        try:
            port = int(environ.get(name, default))
        except ValueError:
            continue
        if 0 < port < 65536 and port not in ports:
            ports.append(port)
    return ports


def probe(path: str, ports: Sequence[int], host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when any port answers ``GET path`` with HTTP 200."""
    for port in ports:
        try:
            with _OPENER.open(f"http://{host}:{port}{path}", timeout=timeout) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args else DEFAULT_PATH
    if not path.startswith("/"):
        print("usage: hl7-healthcheck [/livez|/readyz]", file=sys.stderr)
        return 2
    return 0 if probe(path, candidate_ports(os.environ)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
