"""Resident memory per worker: serve the real model and index with 1, 2, 3 worker processes in turn and
measure every process (RSS, and PSS / private / shared from /proc/<pid>/smaps_rollup). `make worker-memory`.

    python deploy/worker_memory.py [--index index] [--workers 1,2,3] [--requests 50]

For each count: start `python -m service.serve` (REPORTQA_WORKERS=N) on loopback, wait until every worker has
loaded, send `--requests` searches and asks (new queries) so each worker has served some, then measure and
stop it. PSS divides shared pages (libraries, memory-mapped index files) between the processes mapping them,
so the PSS sum is what the service costs the machine; the RSS sum counts shared pages once per process.
Prints one JSON line per count and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from proctools import children, ensure_index, free_port, memory_mib, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent


def measure(n: int, index: Path, requests: int, env: dict, logs: Path) -> dict:
    port = free_port()
    log_path = logs / f"workers-{n}.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "service.serve"], cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**env, "HOST": "127.0.0.1", "PORT": str(port), "REPORTQA_WORKERS": str(n),
                                         "REPORTQA_INDEX_DIR": str(index)})
        url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        wait_http(f"{url}/readyz", 300, proc)
        if n == 1:
            pass  # one process: /readyz 200 means loaded
        else:
            deadline = time.monotonic() + 300
            while log_path.read_text(errors="replace").count("Application startup complete") < n:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{n} workers did not all start: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        ready_s = round(time.monotonic() - t0, 1)
        with httpx.Client(timeout=60) as c:
            for i in range(requests):  # new connections, so the kernel spreads them over the workers
                q = f"what did the foundation do in {i}"
                r = (c.get(f"{url}/v1/search", params={"q": q}, headers={"Connection": "close"}) if i % 2 == 0
                     else c.post(f"{url}/v1/ask", json={"question": q}, headers={"Connection": "close"}))
                r.raise_for_status()
        time.sleep(0.5)
        kids = children(proc.pid)
        procs = [{"pid": proc.pid, "role": "supervisor" if kids else "server", **memory_mib(proc.pid)}]
        procs += [{"pid": k, "role": "worker", **memory_mib(k)} for k in kids]
        total = {key: round(sum(p[key] or 0 for p in procs), 1) for key in ("rss", "pss", "private")}
        return {"workers": n, "ready_seconds": ready_s, "processes": procs, "total_mib": total}
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=ROOT / "index")
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--requests", type=int, default=50)
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failed = ensure_index(args.index, ROOT / "corpus", env)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    logs = Path(tempfile.mkdtemp(prefix="reportqa-worker-memory-"))
    results = []
    for n in (int(x) for x in args.workers.split(",")):
        res = measure(n, args.index.resolve(), args.requests, env, logs)
        results.append(res)
        print(json.dumps(res), flush=True)
    print()
    print("| workers | processes | RSS each (MiB) | PSS each (MiB) | RSS sum | PSS sum | private sum |")
    print("|---|---|---|---|---|---|---|")
    def each(res: dict, key: str) -> str:
        return " / ".join(f"{p['role'][0]}:{p[key]}" for p in res["processes"])

    for res in results:
        t = res["total_mib"]
        print(f"| {res['workers']} | {len(res['processes'])} | {each(res, 'rss')} | {each(res, 'pss')} | {t['rss']} | "
              f"{t['pss']} | {t['private']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
