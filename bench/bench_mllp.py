"""MLLP over TLS against POST /hl7: messages per second and edge CPU per message, same edge,
same run.

One edge process serves both transports (``HL7_MLLP_PORT`` with TLS and a client
certificate, plus HTTP). In alternating rounds after a warm-up of each:

* ``mllp``: 8 persistent MLLP-over-TLS connections, each sending a 1 KB ADT and waiting
  for its ACK (the way HL7 engines send), from a load-generator process of its own;
* ``http``: ``wrk`` with 8 keep-alive connections posting the same message to ``/hl7``
  (Basic auth, cached after the first check; plain HTTP, as behind a TLS-terminating
  load balancer).

Both store every message in the same real Kafka topic with ``acks=all`` before the ACK.
Reported per contender: median and min-max of messages/s and of the edge process's CPU
microseconds per message (user + system, all threads, from /proc), and the goal figure
``mllp_per_edge_cpu_second / http_per_edge_cpu_second`` (goal >= 1.5). The load
generators and the broker share the machine's cores with the edge, so messages/s
understate a dedicated host; CPU per message is the steadier comparison.

Usage:  HL7_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 python bench/bench_mllp.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_edge import (  # noqa: E402 - after the sys.path line, like every bench
    _LUA,
    PASSWORD,
    USER,
    basic_auth,
    one_kb_message,
    process_cpu_seconds,
    run_wrk,
)

SB, EB = b"\x0b", b"\x1c\x0d"
CONNECTIONS = 8


def make_pki(work: Path) -> str:
    """Server and client certificates (a CA each, P-256) in ``work``; the client's fingerprint."""
    from tests.integration.edge.mllp_kit import make_cert

    server_ca, client_ca = make_cert("bench server CA", ca=True), make_cert("bench client CA", ca=True)
    make_cert("127.0.0.1", issuer=server_ca, server=True).write(work, "server")
    client = make_cert("bench engine", issuer=client_ca)
    client.write(work, "client")
    server_ca.write(work, "server-ca")
    client_ca.write(work, "client-ca")
    return client.fingerprint


def registry_yaml(fingerprint: str) -> str:
    from processor.registry.credentials import hash_password

    return f"""
customers:
  - id: trust-1
    alias: trustalias
partners:
  - id: mailco
    username: {USER}
    password_hash: "{hash_password(PASSWORD)}"
    authorised_by: [trust-1]
    client_certificates: ["{fingerprint}"]
"""


# -- the edge (its own process) ----------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    import logging

    from processor.config import load_settings
    from processor.edge.server import run_edge
    from processor.registry.watcher import RegistryWatcher

    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    settings = load_settings(
        kafka_bootstrap_servers=args.bootstrap,
        registry_file=str(work / "registry.yaml"),
        topic_raw=args.topic,
        edge_host="127.0.0.1",
        edge_port=args.port,
        mllp_port=args.mllp_port,
        mllp_tls_certfile=str(work / "server.crt"),
        mllp_tls_keyfile=str(work / "server.key"),
        mllp_client_ca_file=str(work / "client-ca.crt"),
    )
    watcher = RegistryWatcher(settings.registry_file, 2.0)  # type: ignore[arg-type]
    watcher.start()
    run_edge(settings, lambda: watcher.current)
    watcher.stop()
    return 0


# -- the MLLP load generator (its own process) -------------------------------------------------
def mllp_load(args: argparse.Namespace) -> int:
    work = Path(args.work)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(work / "server-ca.crt"))
    context.load_cert_chain(str(work / "client.crt"), str(work / "client.key"))
    framed = SB + one_kb_message() + EB
    latencies: list[float] = []
    errors = 0

    async def connection(stop_at: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", args.mllp_port, ssl=context)
        try:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                writer.write(framed)
                ack = await reader.readuntil(EB)
                latencies.append(time.monotonic() - started)
                errors += b"|AA|" not in ack
        finally:
            writer.close()

    async def main() -> float:
        start = time.monotonic()
        await asyncio.gather(*(connection(start + args.seconds) for _ in range(CONNECTIONS)))
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    print(
        json.dumps(
            {
                "rps": len(latencies) / elapsed,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "requests": len(latencies),
                "errors": errors,
            }
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating mllp/http rounds; medians reported"
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("HL7_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mllp-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mllp-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    if args.mllp_load:
        return mllp_load(args)
    if not shutil.which("wrk"):
        raise SystemExit("bench_mllp needs wrk for the HTTP side")

    import httpx
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from processor.kafka.local_broker import free_port

    topic = f"bench.mllp.raw.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    work = Path(tempfile.mkdtemp(prefix="bench-mllp-"))
    (work / "registry.yaml").write_text(registry_yaml(make_pki(work)))
    body = one_kb_message()
    (work / "body.hl7").write_bytes(body)
    (work / "post.lua").write_text(_LUA)
    auth = basic_auth(USER)
    port, mllp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    me = [sys.executable, __file__, "--work", str(work), "--bootstrap", args.bootstrap]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HL7_")}, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [*me, "--serve", "--topic", topic, "--port", str(port), "--mllp-port", str(mllp_port)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(base + "/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("info", {}).get("kafka"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("edge did not become ready")
            time.sleep(0.05)
        first = httpx.post(
            base + "/hl7",
            content=body,
            timeout=30,
            headers={"Content-Type": "application/hl7-v2", "Authorization": auth},
        )
        assert first.status_code == 200 and b"MSA|AA|" in first.content, first.content[:200]

        def measure(which: str) -> dict[str, float]:
            cpu_before = process_cpu_seconds(server.pid)
            if which == "http":
                result = run_wrk(
                    base + "/hl7", work / "body.hl7", auth, args.seconds, CONNECTIONS, work / "post.lua"
                )
            else:
                out = subprocess.run(
                    [*me, "--mllp-load", "--mllp-port", str(mllp_port), "--seconds", str(args.seconds)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
            cpu = process_cpu_seconds(server.pid) - cpu_before
            result["edge_cpu_us_per_message"] = cpu / max(1, result["requests"]) * 1e6
            result["messages_per_edge_cpu_second"] = result["requests"] / max(cpu, 1e-9)
            return result

        measure("mllp"), measure("http")  # warm-up, discarded
        runs: dict[str, list[dict[str, float]]] = {"mllp": [], "http": []}
        for _ in range(args.rounds):
            for which in ("mllp", "http"):
                runs[which].append(measure(which))
                print(which, {k: round(v, 1) for k, v in runs[which][-1].items()}, file=sys.stderr)
    finally:
        server.terminate()
        server.wait(60)

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "bench-" + uuid.uuid4().hex})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    consumer.close()
    admin.delete_topics([topic])[topic].result(30)
    shutil.rmtree(work, ignore_errors=True)

    def summary(rs: list[dict[str, float]], key: str) -> dict[str, float]:
        values = [r[key] for r in rs]
        return {
            "median": round(statistics.median(values), 1),
            "min": round(min(values), 1),
            "max": round(max(values), 1),
        }

    report = {
        "connections": CONNECTIONS,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "message_bytes": len(body),
        "cpu_count": os.cpu_count(),
        **{
            which: {
                "messages_per_s": summary(rs, "rps"),
                "edge_cpu_us_per_message": summary(rs, "edge_cpu_us_per_message"),
                "messages_per_edge_cpu_second": summary(rs, "messages_per_edge_cpu_second"),
                "p50_ms": summary(rs, "p50_ms"),
                "p99_ms": summary(rs, "p99_ms"),
                "errors": sum(r["errors"] for r in rs),
            }
            for which, rs in runs.items()
        },
        "ratio_mllp_to_http_per_edge_cpu_second": round(
            statistics.median(r["messages_per_edge_cpu_second"] for r in runs["mllp"])
            / statistics.median(r["messages_per_edge_cpu_second"] for r in runs["http"]),
            2,
        ),
        "ratio_mllp_to_http_messages_per_s": round(
            statistics.median(r["rps"] for r in runs["mllp"])
            / statistics.median(r["rps"] for r in runs["http"]),
            2,
        ),
        # mllp round i against the http round that followed it (interleaved: same conditions)
        "ratio_per_edge_cpu_second_by_round": [
            round(m["messages_per_edge_cpu_second"] / h["messages_per_edge_cpu_second"], 2)
            for m, h in zip(runs["mllp"], runs["http"], strict=True)
        ],
        "goal_ratio_per_edge_cpu_second": 1.5,
        "records_in_kafka": high - low,
    }
    acked = 1 + sum(r["requests"] - r["errors"] for rs in runs.values() for r in rs)
    print(json.dumps(report, indent=2))
    if high - low < acked:
        print("ERROR: fewer records in Kafka than accepted ACKs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
