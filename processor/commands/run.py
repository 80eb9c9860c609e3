"""``hl7-processor run``: the whole pipeline on one machine.

Starts a local Apache Kafka when ``HL7_KAFKA_BOOTSTRAP_SERVERS`` is unset, creates
the topics, loads the registry (``--registry``, ``HL7_REGISTRY_FILE`` or the demo
registry), then runs the edge and one stream processor in this process until
Ctrl-C, and stops them in order: edge (finish requests, flush), processor (commit
or abort the open batch, leave the group), broker.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import threading
from pathlib import Path

from processor.config import Settings, load_settings
from processor.errors import CommandFailed, GatewayError
from processor.shutdown import on_shutdown_signal

__all__ = ["main", "curl_command", "mllp_command"]

log = logging.getLogger(__name__)

_SEED_SEGMENTS = (
    r"MSH|^~\\&|DEMO_APP|trustalias{trustalias}|PKB|PKB|20261127104000||ADT^A01^ADT_A01|DEMO0001|P|2.5",
    "EVN|A01|20261127104000",
    "PID|1||9999999999^^^NHS^NH||DEMO^PATIENT||19700101|U",
    "PV1|1|O",
)


def curl_command(edge_url: str, username: str = "partner_mailco", password: str = "testing") -> str:
    """A shell line that sends the seed ADT^A01 as the demo partner and prints the ACK."""
    body = r"\r".join(_SEED_SEGMENTS) + r"\r"
    return (
        f"printf '{body}' | curl -sS -u {username}:{password} "
        f"-H 'Content-Type: application/hl7-v2' --data-binary @- {edge_url}/hl7 | tr '\\r' '\\n'"
    )


# Without python-hl7: send one frame, print the ACK (one read: an ACK is small).
_MLLP_PY = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2]))); "
    's.sendall(b"\\x0b" + sys.stdin.buffer.read() + b"\\x1c\\r"); '
    'print(s.recv(65536).strip(b"\\x0b\\x1c\\r").decode().replace("\\r", "\\n"))'
)


def mllp_command(host: str, port: int, *, use_mllp_send: bool | None = None) -> str:
    """A shell line (bash, zsh) that sends the seed ADT^A01 over MLLP and prints the ACK: with
    python-hl7's ``mllp_send`` when it is installed beside this interpreter (``make run``
    installs it; its ``--loose -f`` mode, as its stdin mode fails on Python 3), else with a
    few lines of Python."""
    body = r"\r".join(_SEED_SEGMENTS) + r"\r"
    beside = Path(sys.executable).parent / "mllp_send"
    if beside.exists() if use_mllp_send is None else use_mllp_send:
        tool = shlex.quote(str(beside))
        return f"{tool} --loose -f <(printf '{body}') -p {port} {host} | tr -d '\\013\\034' | tr '\\r' '\\n'"
    return f"printf '{body}' | {shlex.quote(sys.executable)} -c '{_MLLP_PY}' {host} {port}"


def _mllp_port(settings: Settings) -> int:
    """``HL7_MLLP_PORT``, else 2575 (HL7's registered port) when free, else any free port."""
    if settings.mllp_port is not None:
        return settings.mllp_port
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 2575))
        except OSError:
            return 0
    return 2575


def _registry_path(args: argparse.Namespace, settings: Settings) -> Path:
    from processor.registry import DEMO_REGISTRY_PATH

    if args.registry:
        return Path(args.registry)
    return Path(settings.registry_file) if settings.registry_file else Path(DEMO_REGISTRY_PATH)


def _own_command() -> str:
    """How to call this command again from the same shell: the console script as invoked
    (``make run`` uses ``.venv/bin/hl7-processor``, not on PATH), else ``python -m processor``."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "hl7-processor":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m processor"


def main(args: argparse.Namespace) -> int:
    from processor.edge.server import EdgeServer
    from processor.kafka.local_broker import LocalKafka
    from processor.kafka.topics import ensure_topics
    from processor.registry.watcher import RegistryWatcher
    from processor.stream.metrics_server import start_metrics_server
    from processor.stream.processor import StreamProcessor

    settings = load_settings(schema_registry_auto_register=True)  # a demo: register the schemas
    # MLLP for the demo: localhost, plaintext (no certificates to make), as the demo partner.
    settings = settings.model_copy(
        update={
            "mllp_port": _mllp_port(settings),
            "mllp_host": "127.0.0.1",
            "mllp_plaintext": True,
            "mllp_plaintext_principal": settings.mllp_plaintext_principal or "mailco",
        }
    )
    stop = threading.Event()
    failure: list[GatewayError] = []  # what ended the run, reported by processor.cli
    on_shutdown_signal(stop.set)

    broker: LocalKafka | None = None
    edge = watcher = metrics = None
    processor: StreamProcessor | None = None
    worker: threading.Thread | None = None
    try:
        if not settings.kafka_bootstrap_servers:
            print("No HL7_KAFKA_BOOTSTRAP_SERVERS: starting a local Apache Kafka ...", flush=True)
            broker = LocalKafka.from_settings(settings, data_dir=args.data_dir)
            settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.start()})
        ensure_topics(settings)

        registry_path = _registry_path(args, settings)
        watcher = RegistryWatcher(registry_path, settings.registry_reload_seconds)
        watcher.start()

        processor = StreamProcessor(settings, watcher)
        metrics = start_metrics_server(
            settings.metrics_port,
            live=processor.live,
            readiness=processor.readiness,
            host=settings.edge_host,
        )

        def run_processor() -> None:
            try:
                processor.run()
            except GatewayError as exc:  # StreamFatalError, or a ConfigError at start
                failure.append(exc)
                stop.set()

        worker = threading.Thread(target=run_processor, name="stream-processor", daemon=True)
        worker.start()
        edge = EdgeServer(settings, lambda: watcher.current)
        url = edge.start()
        mllp_host, mllp_port = edge.mllp_address or ("127.0.0.1", 0)

        print(
            "\nHL7 Partner Gateway is running\n"
            f"  Kafka      {settings.kafka_bootstrap_servers}{' (local, started here)' if broker else ''}\n"
            f"  registry   {registry_path} (version {watcher.current.version})\n"
            f"  edge       {url}/hl7  {url}/soap  {url}/soap?wsdl  {url}/metrics\n"
            f"  MLLP       {mllp_host}:{mllp_port} (plaintext, development only: as principal "
            f"{settings.mllp_plaintext_principal})\n"
            f"  processor  metrics on port {metrics.port}\n"
            f"  topics     {settings.topic_raw} -> {settings.topic_accepted} | {settings.topic_deadletter}\n"
            "\nSend the seed message as the demo partner:\n\n"
            f"  {curl_command(url)}\n\n"
            "The same over MLLP (python-hl7's mllp_send):\n\n"
            f"  {mllp_command(mllp_host, mllp_port)}\n\n"
            f"Read what was routed:  HL7_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} "
            f"{_own_command()} decode {settings.topic_accepted}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        stop.wait()
    except GatewayError as exc:
        failure.append(exc)
    except OSError as exc:  # e.g. the edge's port is taken
        failure.append(CommandFailed(f"run: {exc.strerror or type(exc).__name__}"))
    finally:
        print("stopping ...", flush=True)
        if edge is not None:
            edge.stop()
        if processor is not None:
            processor.stop()
        if worker is not None:
            worker.join(timeout=60)
        if metrics is not None:
            metrics.close()
        if watcher is not None:
            watcher.stop()
        if broker is not None:
            broker.close()
        print("stopped", flush=True)
    if failure:
        raise failure[0]  # processor.cli: one "hl7-processor: ..." line, exit 2 or 1
    return 0
