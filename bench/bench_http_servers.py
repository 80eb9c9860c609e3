"""Which HTTP/1.1 server for the edge: throughput and the limits that really hold.

Five candidates serve the same minimal Starlette app (``POST /ping`` reads the whole
body, answers 200 "ok") on 127.0.0.1, one worker each, each in its own process:

* **A** ``uvicorn-guarded``: uvicorn + httptools + uvloop under our
  ``processor.edge.limits.guarded_protocol`` (head timeout 10 s, body rate 240 B/s
  after 5 s, <= 100 headers, <= 32 KiB head -> 431, <= 2048 connections -> 503);
* **B** ``uvicorn-httptools``: the same without the guard (today's baseline);
* **C** ``uvicorn-h11``: uvicorn's h11 protocol with its own limits
  (``h11_max_incomplete_event_size`` default 16 KiB, ``limit_concurrency=2048``);
* **D** ``hypercorn``: asyncio worker, ``read_timeout=10`` (per read, not per head),
  ``h11_max_incomplete_size=32 KiB``, ``keep_alive_timeout=5``, ``backlog=2048``. Its
  idle timer runs from the connection's start (or the last response) until a whole
  request head has been parsed, so ``keep_alive_timeout`` is in effect its head
  deadline (5 s here). It has no body-rate limit, header-count limit or connection cap;
* **E** ``granian``: ASGI interface, HTTP/1 only, ``header_read_timeout=10 s``,
  ``max_buffer_size=32 KiB``, ``keep_alive`` on, ``backpressure=2048``,
  ``backlog=2048``. hyper also refuses more than 100 headers with 431; granian has no
  body-rate limit.

A, B and C use uvloop; D uses plain asyncio (its ``asyncio`` worker, as asked).

Measured (throughput in interleaved rounds A B C D E, A B C D E, ... after a warm-up
round; the attacks once per candidate, each on a fresh server process):

1. throughput: requests/s and p99 for 1 KiB POST bodies at concurrency 32; also the
   server's CPU microseconds per request (less sensitive to other load on the host);
2. slow head: 200 connections sending half a request line + 1 sending nothing: how
   many are still open after 15 s and 30 s (cap 35 s);
3. 20,000 request headers (~1.9 MB): status answered (or "closed"), time, server CPU;
4. one 4 MiB header value: status (or "closed") and server CPU seconds spent;
   (3 and 4 are sent in 1 KiB segments every 0.2 ms, see ``_send_and_watch``);
5. slow body: ``Content-Length: 10000`` then 10 bytes/s: closed after how many
   seconds (cap 30 s; runs at the same time as 2, on the same server);
6. a good client's p99 (concurrency 8, 5 s windows) while 1,000 slow-head connections
   are held open by another process (reconnecting when closed; window starts 1 s after
   all are open) vs. without, in 3 alternating pairs: ratio of the medians.

The load generator is ``wrk`` when installed (``apt-get install -y wrk``), else a
small asyncio raw-socket HTTP/1.1 client in this file. It shares the machine's cores
with the server; other work on the host adds noise, hence the interleaving and the
min-max spread in the report.

Install the candidates in a venv of their own (NOT project dependencies)::

    python3 -m venv /tmp/srvbench
    /tmp/srvbench/bin/pip install 'uvicorn[standard]' hypercorn granian starlette httpx

A, B and C run on the project venv (``/work/main/.venv/bin/python``, which has
uvicorn, httptools, uvloop), with the repo on PYTHONPATH; D and E on ``/tmp/srvbench``.

Usage (about 8 minutes)::

    /tmp/srvbench/bin/python bench/bench_http_servers.py --json-out /tmp/srvbench/report.json

Options: ``--rounds 4 --seconds 5 --only A,B --skip-attacks --loadgen python``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# -- the app (imported by the server processes; the driver needs only the stdlib) -------------
try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def _ping(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/ping", _ping, methods=["POST"])])
except ImportError:  # the driver may run on an interpreter without starlette
    app = None

GUARD = dict(
    header_timeout=10,
    body_min_rate=240,
    body_rate_grace=5,
    max_header_count=100,
    max_header_bytes=32768,
    max_connections=2048,
)

CANDIDATES = {
    "A": "uvicorn-guarded",
    "B": "uvicorn-httptools",
    "C": "uvicorn-h11",
    "D": "hypercorn",
    "E": "granian",
}
PROJECT_SIDE = {"A", "B", "C"}


# -- server side ----------------------------------------------------------------------------
def serve(cand: str, port: int) -> None:
    if cand in ("A", "B", "C"):
        import uvicorn

        common = dict(
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            lifespan="off",
            access_log=False,
            log_level="warning",
            workers=1,
        )
        if cand == "A":
            from processor.edge.limits import ConnectionLimits, guarded_protocol

            config = uvicorn.Config(app, http=guarded_protocol(ConnectionLimits(**GUARD)), **common)
        elif cand == "B":
            config = uvicorn.Config(app, http="httptools", **common)
        else:
            config = uvicorn.Config(app, http="h11", limit_concurrency=2048, **common)
        uvicorn.Server(config).run()
    elif cand == "D":
        from hypercorn.asyncio import serve as hserve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.workers = 1
        config.keep_alive_timeout = 5
        config.read_timeout = 10
        config.h11_max_incomplete_size = 32768
        config.backlog = 2048
        config.accesslog = None
        config.loglevel = "WARNING"
        asyncio.run(hserve(app, config))
    elif cand == "E":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.http import HTTP1Settings
        from granian.log import LogLevels

        Granian(
            "bench_http_servers:app",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            http=HTTPModes.http1,
            loop=Loops.auto,
            backlog=2048,
            backpressure=2048,
            log_level=LogLevels.warning,
            log_access=False,
            http1_settings=HTTP1Settings(header_read_timeout=10_000, keep_alive=True, max_buffer_size=32768),
        ).serve()
    else:
        raise SystemExit(f"unknown candidate {cand}")


class Server:
    """One candidate in its own process group; CPU time summed over its process tree."""

    def __init__(self, cand: str, pythons: dict[str, str], logdir: Path) -> None:
        self.cand = cand
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        python = pythons["project" if cand in PROJECT_SIDE else "bench"]
        self.log = open(logdir / f"{cand}-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "serve", cand, str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        req = b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cand} exited: see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(req)
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.cand} not ready in {timeout} s")

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / tick

    def cpu_settled(self, cap: float = 5.0) -> float:
        """CPU seconds once the server has gone quiet (it may still be chewing)."""
        deadline = time.monotonic() + cap
        last = self.cpu()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.cpu()
            if now - last < 0.02:
                return now
            last = now
        return last

    def alive(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(5)
                s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=8)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()


# -- load generators --------------------------------------------------------------------------
WRK_LUA = (
    'wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\n'
    'wrk.headers["Content-Type"] = "application/octet-stream"\n'
)


def _wrk_time(s: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    assert m, s
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m[2]]


def run_wrk(port: int, seconds: float, conc: int, lua: Path) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, conc)}",
            f"-c{conc}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/ping",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p50 = _wrk_time(re.search(r"\n\s+50%\s+(\S+)", out)[1])
    p99 = _wrk_time(re.search(r"\n\s+99%\s+(\S+)", out)[1])
    total = int(re.search(r"(\d+) requests in", out)[1])
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total, "errors": errors}


async def _py_load(port: int, seconds: float, conc: int) -> dict:
    body = b"x" * 1024
    req = (
        b"POST /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1024\r\n\r\n" + body
    )
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                errors += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while time.perf_counter() < stop_at:
                    t0 = time.perf_counter()
                    w.write(req)
                    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    await r.readexactly(int(m[1]) if m else 0)
                    lat.append(time.perf_counter() - t0)
                    if not head.startswith(b"HTTP/1.1 200"):
                        errors += 1
                    if re.search(rb"(?i)connection:\s*close", head):
                        break
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                errors += 1
            finally:
                w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - t0
    lat.sort()

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")

    return {
        "rps": len(lat) / elapsed,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "requests": len(lat),
        "errors": errors,
    }


def load(loadgen: str, port: int, seconds: float, conc: int, lua: Path) -> dict:
    if loadgen == "wrk":
        return run_wrk(port, seconds, conc, lua)
    return asyncio.run(_py_load(port, seconds, conc))


# -- attacks ----------------------------------------------------------------------------------
async def _watch_close(
    r: asyncio.StreamReader, t0: float, cap: float, seen: dict | None = None
) -> tuple[float | None, bytes]:
    """Seconds until the server closed (None: still open at cap) and what it said.

    ``seen``, if given, gets "first" (seconds until the first byte) and "got" as they come."""
    got = b""
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), max(0.0, t0 + cap - time.monotonic()))
            if not chunk:
                return time.monotonic() - t0, got
            got += chunk[: max(0, 200 - len(got))]
            if seen is not None:
                seen.setdefault("first", time.monotonic() - t0)
                seen["got"] = got
    except TimeoutError:
        return None, got
    except OSError:
        return time.monotonic() - t0, got


def _status(got: bytes) -> str:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    return m[1].decode() if m else ("closed" if not got else repr(got[:30]))


async def slow_head_and_body(port: int, cap_head: float = 35.0, cap_body: float = 30.0) -> dict:
    async def head_conn(send: bytes) -> float | None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        if send:
            w.write(send)
        closed, _ = await _watch_close(r, t0, cap_head)
        w.close()
        return closed

    async def slow_body() -> dict:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        w.write(
            b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 10000\r\n\r\n"
        )
        watcher = asyncio.create_task(_watch_close(r, t0, cap_body))
        sent = 0
        while not watcher.done() and sent < 10000 and time.monotonic() - t0 < cap_body:
            try:
                w.write(b"0123456789")
                await w.drain()
                sent += 10
            except OSError:
                break
            await asyncio.wait({watcher}, timeout=1.0)
        closed, got = await watcher
        w.close()
        return {
            "closed_after_s": None if closed is None else round(closed, 1),
            "answer": _status(got) if closed is not None else None,
            "body_bytes_sent": sent,
        }

    half = [head_conn(b"POST /ping HT") for _ in range(200)]
    results = await asyncio.gather(*half, head_conn(b""), slow_body())
    closes, body = results[:-1], results[-1]

    def open_at(t: float) -> int:
        return sum(1 for c in closes if c is None or c > t)

    closed_times = sorted(c for c in closes if c is not None)
    return {
        "slow_head": {
            "connections": len(closes),
            "open_after_15s": open_at(15),
            "open_after_30s": open_at(30),
            "median_close_s": round(statistics.median(closed_times), 1) if closed_times else None,
            "silent_conn_closed_after_s": None if closes[-1] is None else round(closes[-1], 1),
        },
        "slow_body": body,
    }


async def _send_and_watch(
    port: int, payload: bytes, cap: float, chunk: int = 1024, pause: float = 0.0002
) -> dict:
    """Send payload in small paced segments (stop if the server closes); report the first
    answer byte's time or the close's.

    Pacing matters: a parser that re-concatenates a partial header on every read is
    quadratic in the number of reads, and an attacker chooses how its bytes are cut
    (one 64 KiB write arrives in few reads and costs plain httptools 0.02 s; 1 KiB every
    0.2 ms costs it about 1 CPU-second). 1 KiB segments every 0.2 ms is ~5 MB/s."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    seen: dict = {}
    watcher = asyncio.create_task(_watch_close(r, t0, cap, seen))
    sent = 0
    try:
        for i in range(0, len(payload), chunk):
            if watcher.done() or time.monotonic() - t0 > cap:
                break
            w.write(payload[i : i + chunk])
            await asyncio.wait_for(w.drain(), max(0.01, t0 + cap - time.monotonic()))
            sent = i + len(payload[i : i + chunk])
            if pause:
                await asyncio.sleep(pause)
    except (TimeoutError, OSError):
        pass
    # wait for the first answer byte or the close (a server that answers may keep the connection)
    while not watcher.done() and "first" not in seen and time.monotonic() - t0 < cap:
        await asyncio.sleep(0.005)
    if not watcher.done():
        await asyncio.sleep(0.2)  # let the rest of a short answer arrive
    if watcher.done():
        closed, got = watcher.result()
    else:
        watcher.cancel()
        closed, got = None, seen.get("got", b"")
    w.close()
    answered = seen.get("first", closed)
    if got:
        answer = _status(got)
    elif closed is not None:
        answer = "closed"
    else:
        answer = f"none in {cap:.0f} s"
    return {
        "answer": answer,
        "time_s": None if answered is None else round(answered, 4),
        "closed_by_server": closed is not None,
        "bytes_sent": sent,
        "bytes_total": len(payload),
        "chunk_bytes": chunk,
        "pause_s": pause,
    }


def many_headers() -> bytes:
    lines = b"".join(b"X-H%05d: %s\r\n" % (i, b"v" * 80) for i in range(20000))
    return b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + lines + b"\r\n"


def big_header() -> bytes:
    return b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Big: " + b"a" * (4 << 20) + b"\r\n\r\n"


def attack_payload(srv: Server, payload: bytes, cap: float = 30.0) -> dict:
    c0 = srv.cpu()
    res = asyncio.run(_send_and_watch(srv.port, payload, cap))
    res["server_cpu_s"] = round(srv.cpu_settled() - c0, 3)
    res["server_alive_after"] = srv.alive()
    return res


async def hold(port: int, n: int) -> dict:
    """n slow-head connections held open until stdin closes, reopened when the server closes one.

    Prints "ready <open>" once all n are open (or after 10 s), then the stats as JSON."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ready = asyncio.Event()
    stats = {"opened": 0, "reconnects": 0, "connect_errors": 0, "open": 0, "max_open": 0}

    async def one() -> None:
        first = True
        while not stop.is_set():
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                stats["connect_errors"] += 1
                await asyncio.sleep(0.1)
                continue
            stats["opened"] += 1
            stats["reconnects"] += 0 if first else 1
            first = False
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            if stats["open"] >= n:
                ready.set()
            try:
                w.write(b"POST /ping HT")
                closed = asyncio.create_task(_watch_close(r, time.monotonic(), 3600))
                await asyncio.wait(
                    {closed, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
                )
                closed.cancel()
            finally:
                stats["open"] -= 1
                w.close()

    async def announce() -> None:
        try:
            await asyncio.wait_for(ready.wait(), 10)
        except TimeoutError:
            pass
        print(f"ready {stats['open']}", flush=True)

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    announcer = asyncio.create_task(announce())
    await loop.run_in_executor(None, sys.stdin.read)  # until the driver closes our stdin
    stop.set()
    announcer.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def under_slow_heads(
    srv: Server, loadgen: str, lua: Path, python: str, seconds: float, pairs: int = 3
) -> dict:
    """Alternate windows without / with 1,000 held slow-head connections; medians compared."""
    base: list[dict] = []
    attacked: list[dict] = []
    holders: list[dict] = []
    for _ in range(pairs):
        base.append(load(loadgen, srv.port, seconds, 8, lua))
        holder = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "hold", str(srv.port), "1000"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = holder.stdout.readline().split()
        time.sleep(1)  # let the server settle after the connection burst
        res = load(loadgen, srv.port, seconds, 8, lua)
        res["held_at_start"] = int(ready[1]) if len(ready) == 2 else None
        attacked.append(res)
        out, _ = holder.communicate(input="", timeout=60)
        holders.append(json.loads(out))
    p99_base = statistics.median(r["p99_ms"] for r in base)
    p99_att = statistics.median(r["p99_ms"] for r in attacked)
    rps_base = statistics.median(r["rps"] for r in base)
    rps_att = statistics.median(r["rps"] for r in attacked)
    return {
        "baseline": base,
        "attacked": attacked,
        "holders": holders,
        "baseline_p99_ms": round(p99_base, 2),
        "attacked_p99_ms": round(p99_att, 2),
        "baseline_p99_values": [r["p99_ms"] for r in base],
        "attacked_p99_values": [r["p99_ms"] for r in attacked],
        "p99_ratio": round(p99_att / p99_base, 2) if p99_base else None,
        "rps_ratio": round(rps_att / rps_base, 2) if rps_base else None,
        "errors_attacked": sum(r["errors"] for r in attacked),
    }


# -- driver -----------------------------------------------------------------------------------
def versions(python: str, mods: list[str]) -> dict:
    code = (
        "import importlib.metadata as m, json, sys\nout = {'python': sys.version.split()[0]}\n"
        f"for n in {mods!r}:\n    try: out[n] = m.version(n)\n    except Exception: out[n] = None\n"
        "print(json.dumps(out))"
    )
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def spread(xs: list[float]) -> dict:
    return {
        "median": round(statistics.median(xs), 2),
        "min": round(min(xs), 2),
        "max": round(max(xs), 2),
        "values": [round(x, 2) for x in xs],
    }


def markdown(report: dict) -> str:
    rows = [
        "| candidate | req/s median (min-max) | p99 ms median (min-max) | CPU us/req "
        "| slow head open @15s / @30s (of 201) | 20k headers (1.9 MB) | 4 MiB header: answer, CPU s "
        "| slow body closed after "
        "| p99 ms with 1000 slow heads held vs without, medians of 3 (ratio) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cand, r in report["results"].items():
        t = r.get("throughput", {})
        tp = f"{t['rps']['median']:.0f} ({t['rps']['min']:.0f}-{t['rps']['max']:.0f})" if t else "-"
        p99 = f"{t['p99_ms']['median']:.1f} ({t['p99_ms']['min']:.1f}-{t['p99_ms']['max']:.1f})" if t else "-"
        cpu = f"{t['cpu_us_per_req']['median']:.0f}" if t else "-"
        a = r.get("attacks")
        if a:
            sh = a["slow_head"]
            head = f"{sh['open_after_15s']} / {sh['open_after_30s']}"
            mh, bh, sb = a["many_headers"], a["big_header"], a["slow_body"]
            many = f"{mh['answer']} in {mh['time_s']} s, CPU {mh['server_cpu_s']} s" + (
                "" if mh["server_alive_after"] else " (server dead)"
            )
            big = f"{bh['answer']}, {bh['server_cpu_s']}" + (
                "" if bh["server_alive_after"] else " (server dead)"
            )
            body = (
                f"{sb['closed_after_s']} s"
                if sb["closed_after_s"] is not None
                else f"open at 30 s ({sb['body_bytes_sent']} B sent)"
            )
            us = a["under_slow_heads"]
            under = f"{us['attacked_p99_ms']:.1f} vs {us['baseline_p99_ms']:.1f} ms ({us['p99_ratio']}x)"
            if us["errors_attacked"]:
                under += f", {us['errors_attacked']} errors"
        else:
            head = many = big = body = under = "-"
        rows.append(
            f"| {cand} {CANDIDATES[cand]} | {tp} | {p99} | {cpu} "
            f"| {head} | {many} | {big} | {body} | {under} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project-python", default=str(REPO / ".venv/bin/python"))
    ap.add_argument("--bench-python", default="/tmp/srvbench/bin/python")
    ap.add_argument("--rounds", type=int, default=4, help="throughput rounds after the warm-up (0: none)")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--only", default="A,B,C,D,E")
    ap.add_argument("--skip-attacks", action="store_true")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    cands = args.only.split(",")
    loadgen = ("wrk" if shutil.which("wrk") else "python") if args.loadgen == "auto" else args.loadgen
    pythons = {"project": args.project_python, "bench": args.bench_python}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    logdir = Path(tempfile.mkdtemp(prefix="srvbench-logs-"))
    lua = logdir / "post1k.lua"
    lua.write_text(WRK_LUA)
    t_start = time.monotonic()

    report: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "loadgen": loadgen
        + (
            " " + subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
            if loadgen == "wrk"
            else ""
        ),
        "versions": {
            "project_venv": versions(
                args.project_python, ["uvicorn", "httptools", "uvloop", "h11", "starlette"]
            ),
            "bench_venv": versions(args.bench_python, ["hypercorn", "h11", "granian", "starlette", "uvloop"]),
        },
        "settings": {
            "A": {"guard": GUARD, "loop": "uvloop"},
            "B": {"loop": "uvloop"},
            "C": {"h11_max_incomplete_event_size": 16384, "limit_concurrency": 2048, "loop": "uvloop"},
            "D": {
                "worker": "asyncio",
                "read_timeout": 10,
                "h11_max_incomplete_size": 32768,
                "keep_alive_timeout": 5,
                "backlog": 2048,
            },
            "E": {
                "interface": "asgi",
                "http": "1",
                "header_read_timeout_ms": 10000,
                "max_buffer_size": 32768,
                "keep_alive": True,
                "backpressure": 2048,
                "backlog": 2048,
                "loop": "auto (uvloop; rloop absent)",
            },
        },
        "throughput": {"seconds": args.seconds, "concurrency": 32, "body_bytes": 1024, "rounds": args.rounds},
        "results": {c: {} for c in cands},
    }
    print(f"loadgen {report['loadgen']}; logs in {logdir}", file=sys.stderr)

    # 1. throughput, interleaved rounds after a warm-up round
    runs: dict[str, list[dict]] = {c: [] for c in cands}
    for rnd in range(args.rounds + 1 if args.rounds else 0):
        for c in cands:
            srv = Server(c, pythons, logdir)
            try:
                if rnd == 0:
                    load(loadgen, srv.port, 2, 32, lua)
                    continue
                c0 = srv.cpu()
                res = load(loadgen, srv.port, args.seconds, 32, lua)
                res["cpu_us_per_req"] = (srv.cpu() - c0) / max(1, res["requests"]) * 1e6
                runs[c].append(res)
                print(
                    f"round {rnd} {c}: {res['rps']:.0f} req/s p99 {res['p99_ms']:.1f} ms "
                    f"cpu {res['cpu_us_per_req']:.0f} us/req errors {res['errors']}",
                    file=sys.stderr,
                )
            finally:
                srv.stop()
    for c in cands:
        if runs[c]:
            report["results"][c]["throughput"] = {
                k: spread([r[k] for r in runs[c]]) for k in ("rps", "p99_ms", "cpu_us_per_req")
            }
            report["results"][c]["throughput"]["errors"] = sum(r["errors"] for r in runs[c])

    # 2-6. attacks, once per candidate, each group on a fresh server
    if not args.skip_attacks:
        for c in cands:
            a: dict = {}
            srv = Server(c, pythons, logdir)
            try:
                a.update(asyncio.run(slow_head_and_body(srv.port)))
                a["slow_head"]["server_alive_after"] = srv.alive()
            finally:
                srv.stop()
            for key, payload in (("many_headers", many_headers()), ("big_header", big_header())):
                srv = Server(c, pythons, logdir)
                try:
                    a[key] = attack_payload(srv, payload)
                finally:
                    srv.stop()
            srv = Server(c, pythons, logdir)
            try:
                a["under_slow_heads"] = under_slow_heads(srv, loadgen, lua, pythons["bench"], 5)
            finally:
                srv.stop()
            report["results"][c]["attacks"] = a
            print(f"attacks {c}: {json.dumps(a)}", file=sys.stderr)

    report["machine"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - t_start, 1)
    text = json.dumps(report, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text)
    print(text)
    print()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "hold":
        res = asyncio.run(hold(int(sys.argv[2]), int(sys.argv[3])))
        print(json.dumps(res))
    else:
        sys.exit(main())
