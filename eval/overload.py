"""The overload curve: `python -m eval.overload` (`make overload`).

Builds an index from the corpus with the real model (in a temporary directory), starts `python -m service` on
a free loopback port, measures the unloaded latency and the sustainable rate (closed loop, as many clients as
the service has slots), then offers 1x, 2x and 4x that rate open-loop (new hybrid queries, so every one is
encoded) while probing /healthz. Prints a table and one JSON line per load level. Loopback only; bounded in
time (about a minute); stops the server at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger("eval.overload")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Level:
    name: str
    offered_rps: float
    seconds: float
    sent: int = 0
    lat_ok: list[float] = field(default_factory=list)
    lat_refused: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)
    health: list[float] = field(default_factory=list)
    health_failed: int = 0

    def row(self) -> dict:
        ok, ref = sorted(self.lat_ok), sorted(self.lat_refused)
        return {
            "level": self.name,
            "offered_rps": round(self.sent / self.seconds, 1),
            "accepted_rps": round(len(ok) / self.seconds, 1),
            "accepted": len(ok),
            "refused_503": len(ref),
            "other": self.other,
            "p50_ms": pct(ok, 50),
            "p99_ms": pct(ok, 99),
            "refusal_p50_ms": pct(ref, 50),
            "refusal_p99_ms": pct(ref, 99),
            "healthz_p99_ms": pct(sorted(self.health), 99),
            "healthz_failed": self.health_failed,
        }


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000, 2)


class Conn:
    """One keep-alive HTTP/1.1 connection; just enough HTTP for GET requests with Content-Length replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def get(self, path: str) -> tuple[int, bool]:
        """(status, keep-alive)"""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"content-length: *(\d+)", head, re.I)
        await self.reader.readexactly(int(m.group(1)) if m else 0)
        return status, b"connection: close" not in head.lower()

    def close(self) -> None:
        self.writer.close()


class Pool:
    def __init__(self, port: int, limit: int = 400) -> None:
        self.port, self.limit, self.idle, self.open = port, limit, [], 0

    async def request(self, path: str) -> int:
        conn = self.idle.pop() if self.idle else None
        if conn is None:
            if self.open >= self.limit:
                return -1  # the client's own cap: counted, never hidden
            self.open += 1
            try:
                conn = await Conn.open(self.port)
            except OSError:
                self.open -= 1
                return -2
        try:
            status, keep = await conn.get(path)
        except (OSError, asyncio.IncompleteReadError):
            conn.close()
            self.open -= 1
            return -3
        if keep:
            self.idle.append(conn)
        else:
            conn.close()
            self.open -= 1
        return status


def queries(seed: int = 7) -> list[str]:
    """New questions every time (nothing cached): random runs of the report's own words."""
    words = re.findall(r"[A-Za-z]{4,}", (ROOT / "corpus" / "openinfra-annual-report-2023.md").read_text())
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, 7)) + f" {i}" for i in range(100_000)]


async def closed_loop(pool: Pool, qs: list[str], clients: int, seconds: float) -> tuple[list[float], float]:
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            if await pool.request("/v1/search?k=10&q=" + quote(qs.pop())) == 200:
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return sorted(lat), len(lat) / (time.perf_counter() - t0)


async def open_loop(port: int, qs: list[str], level: Level) -> None:
    pool, hpool = Pool(port), Pool(port, limit=4)
    tasks: set[asyncio.Task] = set()
    start = time.perf_counter()
    stop = start + level.seconds

    async def one() -> None:
        t0 = time.perf_counter()
        status = await pool.request("/v1/search?k=10&q=" + quote(qs.pop()))
        dt = time.perf_counter() - t0
        if status == 200:
            level.lat_ok.append(dt)
        elif status == 503:
            level.lat_refused.append(dt)
        else:
            level.other[str(status)] = level.other.get(str(status), 0) + 1

    async def health() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            if await hpool.request("/healthz") == 200:
                level.health.append(time.perf_counter() - t0)
            else:
                level.health_failed += 1
            await asyncio.sleep(0.05)

    probe = asyncio.create_task(health())
    interval = 1.0 / level.offered_rps
    while True:
        due = start + level.sent * interval
        if due >= stop:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.create_task(one())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        level.sent += 1
    await probe
    if tasks:
        await asyncio.wait(tasks, timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, port: int, logfile: Path) -> subprocess.Popen:
    # the latency-first setting the README's curve is measured with: no queue (override with REPORTQA_MAX_QUEUE)
    env = {**os.environ, "REPORTQA_INDEX_DIR": str(index), "HOST": "127.0.0.1", "PORT": str(port),
           "REPORTQA_MAX_QUEUE": os.environ.get("REPORTQA_MAX_QUEUE", "0")}
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=logfile.open("w"),
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited; see {logfile}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the service did not become ready")


async def run(port: int, seconds: float, multiples: list[float]) -> list[dict]:
    qs = queries()
    pool = Pool(port)
    await closed_loop(pool, qs, 1, 1.0)  # warm up
    unloaded, _ = await closed_loop(pool, qs, 1, seconds)
    clients = int(os.environ.get("REPORTQA_MAX_CONCURRENCY", "2"))
    _, sustainable = await closed_loop(pool, qs, clients, seconds)
    rows = [{"level": "unloaded", "offered_rps": None, "accepted_rps": round(len(unloaded) / seconds, 1),
             "accepted": len(unloaded), "p50_ms": pct(unloaded, 50), "p99_ms": pct(unloaded, 99)},
            {"level": "sustainable (closed loop)", "clients": clients, "accepted_rps": round(sustainable, 1)}]
    for m in multiples:
        level = Level(f"{m:g}x", sustainable * m, seconds)
        await open_loop(port, qs, level)
        rows.append(level.row())
        await asyncio.sleep(1.0)  # let the queue drain between levels
    return rows


def table(rows: list[dict]) -> str:
    cols = ["level", "offered_rps", "accepted_rps", "refused_503", "p50_ms", "p99_ms", "refusal_p50_ms",
            "refusal_p99_ms", "healthz_p99_ms", "healthz_failed", "other"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.overload", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load level")
    p.add_argument("--multiples", default="1,2,4", help="offered load as multiples of the sustainable rate")
    p.add_argument("--index", type=Path, help="an index built with the real model (default: build one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index
        if index is None:
            index = Path(tmp) / "index"
            subprocess.run([sys.executable, "-m", "indexer", "build", "--corpus", str(ROOT / "corpus"), "--out",
                            str(index), "--no-progress"], cwd=ROOT, check=True, capture_output=True)
        port = free_port()
        proc = start_server(index, port, Path(tmp) / "server.log")
        try:
            rows = asyncio.run(run(port, args.seconds, [float(x) for x in args.multiples.split(",")]))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    sys.stdout.write(table(rows) + "\n")
    for r in rows:
        sys.stdout.write(json.dumps(r) + "\n")
    log.info("server exit code after SIGTERM: %s", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
