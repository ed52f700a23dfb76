"""Small helpers shared by the deploy scripts: free loopback ports, waiting for a URL, process memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def ensure_index(root: Path, corpus: Path, env: dict) -> str | None:
    """Build the report index root if it is missing or stale and export the ONNX encoder beside it (what
    `make serve` does); None when done, else what failed."""
    for args in (["ensure", "--corpus", str(corpus), "--out", str(root), "--no-progress"],
                 ["export-onnx", "--out", str(root)]):
        r = subprocess.run([sys.executable, "-m", "indexer", *args], cwd=corpus.parent, env=env,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return f"python -m indexer {args[0]} failed: {r.stderr[-2000:]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> httpx.Response:
    """GET `url` until it answers 200 (or raise after `timeout` s, or as soon as `proc` exits)."""
    deadline = time.monotonic() + timeout
    last: object = None
    with httpx.Client(timeout=5) as c:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited ({proc.returncode}) before answering 200")
            try:
                r = c.get(url)
                if r.status_code == 200:
                    return r
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = e
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s (last: {last})")


def stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout` s; only the process given (and, if it leads one, its group)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's), multiprocessing's resource tracker left out."""
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            pids += [int(x) for x in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            continue
    out = []
    for child in pids:
        try:
            cmdline = open(f"/proc/{child}/cmdline", "rb").read()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.append(child)
    return sorted(out)


def memory_mib(pid: int) -> dict[str, float | None]:
    """RSS and (where the kernel has smaps_rollup) PSS, USS-like private and shared RSS of one process, in MiB."""
    out: dict[str, float | None] = {"rss": None, "pss": None, "private": None, "shared": None}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                out["rss"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return out
    try:
        fields: dict[str, int] = {}
        for line in open(f"/proc/{pid}/smaps_rollup"):
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1])
        out["pss"] = round(fields["Pss"] / 1024, 1)
        out["private"] = round((fields["Private_Clean"] + fields["Private_Dirty"]) / 1024, 1)
        out["shared"] = round((fields["Shared_Clean"] + fields["Shared_Dirty"]) / 1024, 1)
    except (OSError, KeyError):
        pass
    return out
