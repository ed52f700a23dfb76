"""HTTP load table: this service and the naive baseline (`../shared/bench/naive_api.py`) side by side on
loopback, closed loop, 1/8/32 clients, new (`unique`) and repeated queries. `make bench-http`.

    python deploy/bench_http.py [--index index] [--workers 1] [--seconds 10] [--clients 1,8,32]
    python deploy/bench_http.py --before ../before --before-index ../index-before    # also an older version

`--before DIR` starts a second service from another checkout (say `git archive <commit> | tar -x -C DIR`) with
the same settings, on its own index root, and loads it in the same run ("before /v1/search", "before
/v1/ask"), so that a change is measured against the code it replaced under the same machine load;
`--before-env KEY=VALUE` (repeatable) sets its environment apart (`--before . --before-index index
--before-env REPORTQA_ONNX_THREADS=1` compares two settings of this checkout).

Starts both servers (this one with `python -m service.serve`, REPORTQA_WORKERS=--workers, on the index root
`--index`, built with `python -m indexer ensure` if missing or stale; the baseline as its docstring says,
`SEED=<report.md> uvicorn naive_api:app`), then runs one step at a time, nothing else loading the machine
from here: for each query kind and client count, the baseline's GET /search, this service's hybrid
GET /v1/search (k=10, as load.py does) and POST /v1/ask. The load logic is `../shared/bench/load.py`'s
(C clients on one httpx.AsyncClient, a warm-up request, random questions per client seeded by its number,
`unique` appends a never-sent number, qps = answered-200 / seconds, p50/p99 over the 200s, anything else an
error), extended to POST. Questions: `../shared/datasets/report-external/questions.jsonl`.
Prints one JSON line per step, then a markdown table with each row's ratio to the baseline in the same run.
Loopback only; every step bounded in time; both servers are stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from proctools import children, ensure_index, free_port, memory_mib, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REPORT = ROOT / "corpus" / "openinfra-annual-report-2023.md"


async def _client(c, request, stop_at, qs, unique, seq, lat, errs, rnd, max_requests, count):
    while time.perf_counter() < stop_at and count[0] < max_requests:
        count[0] += 1
        q = rnd.choice(qs) + (f" {next(seq)}" if unique else "")
        t = time.perf_counter()
        try:
            r = await request(c, q)
            (lat if r.status_code == 200 else errs).append(time.perf_counter() - t)
        except httpx.HTTPError:
            errs.append(time.perf_counter() - t)


# one counter for the whole run: a `unique` query is never sent twice, not even by a later step to another
# target of the same server (with a counter per step, /v1/ask's "new" questions were the ones /v1/search had
# just been sent, and the query-vector cache answered their encoding)
_SEQ = itertools.count()


async def closed_loop(request, clients: int, seconds: float, qs: list[str], unique: bool,
                      max_requests: int = 1_000_000) -> dict:
    """load.py's loop: `clients` concurrent clients for `seconds`; `request(client, q)` sends one request."""
    lat: list[float] = []
    errs: list[float] = []
    seq, count = _SEQ, [0]
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as c:
        await request(c, "warm up")
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_client(c, request, stop_at, qs, unique, seq, lat, errs, random.Random(i),
                                       max_requests, count) for i in range(clients)))
    lat.sort()
    n = len(lat)

    def pct(p: float) -> float | None:
        return round(lat[min(n - 1, int(n * p))] * 1000, 1) if n else None

    return {"qps": round(n / seconds, 1), "requests": n + len(errs), "errors": len(errs),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def targets(naive: str, service: str, before: str | None = None) -> dict:
    async def naive_search(c, q):
        return await c.get(f"{naive}/search", params={"q": q, "k": 10})

    async def hybrid(c, q):
        return await c.get(f"{service}/v1/search", params={"q": q, "k": 10, "mode": "hybrid"})

    async def ask(c, q):
        return await c.post(f"{service}/v1/ask", json={"question": q})

    out = {"naive /search (dense)": naive_search, "service /v1/search (hybrid)": hybrid, "service /v1/ask": ask}
    if before:
        async def before_hybrid(c, q):
            return await c.get(f"{before}/v1/search", params={"q": q, "k": 10, "mode": "hybrid"})

        async def before_ask(c, q):
            return await c.post(f"{before}/v1/ask", json={"question": q})

        out |= {"before /v1/search (hybrid)": before_hybrid, "before /v1/ask": before_ask}
    return out


def process_memory(pid: int) -> list[dict]:
    kids = children(pid)
    top = "supervisor" if kids else "server"
    return [{"pid": p, "role": top if p == pid else "worker", **memory_mib(p)} for p in [pid, *kids]]


def table(rows: list[dict]) -> str:
    base = {(r["queries"], r["clients"]): r for r in rows if r["target"].startswith("naive")}
    out = ["| queries | clients | target | req/s | p50 ms | p99 ms | errors | req/s ÷ naive | p50 ÷ naive |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get((r["queries"], r["clients"]))
        ratio = f"{r['qps'] / b['qps']:.2f}×" if b and b["qps"] else "—"
        p50 = f"{r['p50_ms'] / b['p50_ms']:.2f}×" if b and b["p50_ms"] and r["p50_ms"] else "—"
        if r["target"].startswith("naive"):
            ratio = p50 = "1"
        out.append(f"| {r['queries']} | {r['clients']} | {r['target']} | {r['qps']} | {r['p50_ms']} | "
                   f"{r['p99_ms']} | {r['errors']} | {ratio} | {p50} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=ROOT / "index", help="index root (default: index)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")),
                   help="REPORTQA_WORKERS for this service (default: $WORKERS or 1)")
    p.add_argument("--seconds", type=float, default=float(os.environ.get("SECONDS_PER_STEP", "10")),
                   help="seconds per step (default 10)")
    p.add_argument("--clients", default="1,8,32", help="client counts (default 1,8,32)")
    p.add_argument("--queries", default="unique,repeated", help="query kinds (default unique,repeated)")
    p.add_argument("--targets", default="naive,search,ask", help="what to load (default naive,search,ask)")
    p.add_argument("--questions", type=Path, default=SHARED / "datasets" / "report-external" / "questions.jsonl")
    p.add_argument("--naive", type=Path, default=SHARED / "bench" / "naive_api.py")
    p.add_argument("--torch-threads", type=int, default=1, help="REPORTQA_TORCH_THREADS (default 1)")
    p.add_argument("--onnx-threads", type=int, default=None, help="REPORTQA_ONNX_THREADS (default: the service's)")
    p.add_argument("--before", type=Path, default=None, help="another checkout to load in the same run")
    p.add_argument("--before-index", type=Path, default=None, help="its index root (default: <before>/index)")
    p.add_argument("--before-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the --before service only (repeatable)")
    args = p.parse_args(argv)
    rows_q = [json.loads(line) for line in args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    qs = [r.get("question") or r.get("q") or r.get("query") for r in rows_q]
    clients = [int(x) for x in args.clients.split(",")]
    kinds = args.queries.split(",")
    wanted = {"naive": "naive /search (dense)", "search": "service /v1/search (hybrid)", "ask": "service /v1/ask"}
    chosen = [wanted[t] for t in args.targets.split(",")]
    if args.before:
        chosen += [t.replace("service", "before") for t in chosen if t.startswith("service")]

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failed = ensure_index(args.index, ROOT / "corpus", env)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="reportqa-bench-http-"))
    sport, nport, bport = free_port(), free_port(), free_port()
    service = naive = before = None
    rows: list[dict] = []
    try:
        def serve(tree: Path, index: Path, port: int, name: str, extra: dict | None = None) -> subprocess.Popen:
            with open(logs / f"{name}.log", "wb") as log:
                return subprocess.Popen(
                    [sys.executable, "-m", "service"], cwd=tree, stdout=log, stderr=subprocess.STDOUT,
                    env={**env, "PYTHONPATH": str(tree), "HOST": "127.0.0.1", "PORT": str(port),
                         "REPORTQA_WORKERS": str(args.workers), "REPORTQA_INDEX_DIR": str(index.resolve()),
                         "REPORTQA_TORCH_THREADS": str(args.torch_threads),
                         **({"REPORTQA_ONNX_THREADS": str(args.onnx_threads)} if args.onnx_threads else {}),
                         **(extra or {})},
                    start_new_session=True)

        service = serve(ROOT, args.index, sport, "service")
        if args.before:
            extra = dict(kv.split("=", 1) for kv in args.before_env)
            before = serve(args.before.resolve(), args.before_index or args.before / "index", bport, "before", extra)
        with open(logs / "naive.log", "wb") as log:
            naive = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "naive_api:app", "--host", "127.0.0.1", "--port", str(nport),
                 "--log-level", "warning"], cwd=args.naive.parent, stdout=log, stderr=subprocess.STDOUT,
                env={**env, "SEED": str(REPORT)}, start_new_session=True)
        surl, nurl, burl = f"http://127.0.0.1:{sport}", f"http://127.0.0.1:{nport}", f"http://127.0.0.1:{bport}"
        wait_http(f"{nurl}/search?q=warm&k=1", 300, naive)
        started = [("service", surl, service)] + ([("before", burl, before)] if before else [])
        for name, url, proc in started:
            wait_http(f"{url}/readyz", 300, proc)
            if args.workers > 1:  # every worker loads before it accepts; wait until all have started
                deadline = time.monotonic() + 300
                while (logs / f"{name}.log").read_text(errors="replace").count("Application startup complete") \
                        < args.workers and time.monotonic() < deadline:
                    time.sleep(0.5)
        fns = targets(nurl, surl, burl if before else None)
        header = {"bench": "http", "workers": args.workers, "seconds": args.seconds,
                  **({"before": str(args.before), "before_env": args.before_env} if args.before else {}),
                  "torch_threads": args.torch_threads, "onnx_threads": args.onnx_threads, "questions": len(qs),
                  "cpus": os.cpu_count(),
                  "loadavg_before": os.getloadavg()[0]}
        print(json.dumps(header), flush=True)
        for kind in kinds:
            for n in clients:
                for name in chosen:
                    res = asyncio.run(closed_loop(fns[name], n, args.seconds, qs, kind == "unique"))
                    row = {"queries": "new" if kind == "unique" else "repeated", "clients": n, "target": name,
                           **res}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        mem = {"service": process_memory(service.pid), "naive": process_memory(naive.pid),
               **({"before": process_memory(before.pid)} if before else {}), "loadavg_after": os.getloadavg()[0]}
        print(json.dumps(mem), flush=True)
    finally:
        stop(service)
        stop(naive)
        stop(before)
    print()
    print(f"WORKERS={args.workers}, {args.seconds:g} s per step, loopback, load generator on the same cores")
    print(table(rows))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
