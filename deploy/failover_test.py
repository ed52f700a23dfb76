"""Failover drill on loopback: 2 replicas behind Debian's HAProxy, one killed with SIGKILL under load and
restarted, then a new index version rolled through both replicas one at a time. `make failover-test`.

    python deploy/failover_test.py [--clients 4] [--phase-seconds 4] [--replica-workers 1] [--max-requests 200000]

Steps (each a phase; requests are counted per phase, version and replica):
  1. build an index root with two versions A and B (`python -m indexer build --fake-embedder`, two small
     corpora that each answer the marker query with their own document); CURRENT names A;
  2. start 2 replicas (`python -m service.serve --fake-embedder`, admin token set) on free loopback ports and
     HAProxy in front (config generated in a temp dir: health checks on /readyz, `retries 3`,
     `option redispatch`, `retry-on conn-failure empty-response junk-response response-timeout 502 504`);
  3. `steady`: closed-loop load from C async clients on the balancer (GET /v1/search and POST /v1/ask);
  4. `killed`: SIGKILL replica 1 mid-run; load goes on;
  5. `restarted`: start replica 1 again; it takes traffic again once HAProxy sees /readyz answer 200;
  6. `rolling`: `python -m indexer rollback --to B` switches CURRENT, then POST /v1/admin/reload on replica 1,
     a pause, then on replica 2 (each directly, not through the balancer);
  7. `after`: load on B only.
Checks: every client request answered 200; every response's index_version is A or B and its results come
from the corpus of that version (the marker document); after the roll only B is served; both replicas
served requests before the kill and after the restart. Prints one JSON line; exits 1 on any failure.
Loopback only; every loop bounded in time and count; every process started here is ended in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from proctools import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "failover-drill-token"
MARKER_QUERY = "flamingo census"
MARKER_QUESTION = "Who counted the flamingos for the flamingo census?"
HAPROXY_CFG = """\
global
    maxconn 2000
    stats socket {stats_sock} mode 600 level admin

defaults
    mode http
    # one line per request (`option httplog`) in the drill's haproxy.log: termination_states() reads them
    log stdout format raw local0 info
    option httplog
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout queue 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 502 504
    # L7 retries resend the request, so keep it (body too) in the buffer until the response starts
    option http-buffer-request

frontend api
    bind 127.0.0.1:{lb_port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Replica %s
    default-server inter 250ms fastinter 250ms downinter 250ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def write_corpus(directory: Path, marker: str) -> Path:
    """Two ordinary documents and `census-<marker>.md`, the only one about a flamingo census."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in {
        "harbour": "The harbour authority dredged the northern channel so that container ships with deeper "
                   "draughts could berth at the new quay, and the pilots rehearsed the approach.",
        "orchard": "The orchard cooperative planted three hundred pear trees on the southern slope and "
                   "installed drip irrigation fed from the old mill pond.",
    }.items():
        (directory / f"{name}.md").write_text(
            f"# The {name} report\n\n## Works\n\n{text}\n\n## Budget\n\nThe {name} works were paid from the "
            f"regional fund; the accounts were audited in March.\n", encoding="utf-8")
    (directory / f"census-{marker}.md").write_text(
        f"# Flamingo census {marker}\n\n## Counting\n\nVolunteers of team {marker} counted the flamingos on "
        f"the salt lake at dawn for the flamingo census, using drones and spotting scopes.\n", encoding="utf-8")
    return directory


def run_cli(*args: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-m", "indexer", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"python -m indexer {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


class Replica:
    def __init__(self, name: str, port: int, index: Path, env: dict, logdir: Path, workers: int = 1) -> None:
        self.name, self.port, self.index, self.env, self.logdir = name, port, index, env, logdir
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        env = {**self.env, "HOST": "127.0.0.1", "PORT": str(self.port), "REPORTQA_INDEX_DIR": str(self.index),
               "REPORTQA_ADMIN_TOKEN": TOKEN, "REPORTQA_WORKERS": str(self.workers)}
        log = open(self.logdir / f"{self.name}-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "service.serve", "--fake-embedder"], cwd=ROOT, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self) -> None:
        """SIGKILL to the replica's process group (its own session): the supervisor and every worker die at once,
        as when a container or a machine dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited ({proc.returncode}) before it was ready")
            try:
                r = await c.get(url + "/readyz")
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout:.0f} s")


async def wait_serving(url: str, version: str, workers: int, timeout: float) -> None:
    """Until `workers * 4` searches in a row, each on a new connection, are answered from `version`."""
    deadline = time.monotonic() + timeout
    streak = 0
    async with httpx.AsyncClient(timeout=5) as c:
        while time.monotonic() < deadline:
            try:
                r = await c.get(url + "/v1/search", params={"q": MARKER_QUERY, "k": 1, "mode": "lexical"},
                                headers={"Connection": "close"})
                streak = streak + 1 if r.status_code == 200 and r.json()["index_version"] == version else 0
            except httpx.HTTPError:
                streak = 0
            if streak >= workers * 4:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not serve {version} on every worker within {timeout:.0f} s")


# httplog: `... <status> <bytes> <req cookie> <resp cookie> <termination state> <conns a/f/b/s/retries> ...`
_TERMINATION = re.compile(r" -?\d+ \d+ \S+ \S+ ([A-Za-z-]{4}) \d+/\d+/\d+/\d+/\+?\d+ ")


def termination_states(log_path: Path) -> dict[str, int]:
    """How HAProxy's sessions ended, from its httplog: `----` normally; the first letter says who cut a session
    (C client, S server, P proxy, K killed, e.g. by `on-marked-down shutdown-sessions`), the second when (R
    request, H headers, D data, C connect, Q queue). The count of normal ends (`normal`) and of every other state."""
    states: Counter = Counter()
    if log_path.exists():
        for line in log_path.read_text(errors="replace").splitlines():
            m = _TERMINATION.search(line)
            if m:
                states[m.group(1)] += 1
    normal = states.pop("----", 0)
    return {"normal": normal, **dict(states)}


def haproxy_stats(stats_sock: Path) -> dict[str, dict[str, str]]:
    """{server name (or BACKEND): its `show stat` row} of the replicas backend, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(stats_sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "replicas":
            out[row["svname"]] = row
    return out


def haproxy_servers_up(stats_sock: Path) -> dict[str, str]:
    return {name: row["status"] for name, row in haproxy_stats(stats_sock).items() if name != "BACKEND"}


async def wait_lb_up(stats_sock: Path, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if haproxy_servers_up(stats_sock).get(name, "").startswith("UP"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"HAProxy did not mark {name} UP within {timeout:.0f} s")


class Load:
    """Closed-loop clients on the balancer; every outcome is recorded under the current phase."""

    def __init__(self, lb_url: str, clients: int, expected: dict[str, str], max_requests: int) -> None:
        self.lb_url, self.clients, self.expected, self.max_requests = lb_url, clients, expected, max_requests
        self.phase = "steady"
        self.stop = asyncio.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.by_phase: dict[str, Counter] = {}
        self.replicas_by_phase: dict[str, Counter] = {}

    def _record(self, phase: str, version: str | None, replica: str | None) -> None:
        self.by_phase.setdefault(phase, Counter())[version or "failed"] += 1
        if replica:
            self.replicas_by_phase.setdefault(phase, Counter())[replica] += 1

    async def _client(self, n: int, c: httpx.AsyncClient) -> None:
        i = 0
        while not self.stop.is_set() and self.requests < self.max_requests:
            phase = self.phase
            ask = (n + i) % 4 == 3
            i += 1
            self.requests += 1
            try:
                if ask:
                    r = await c.post(self.lb_url + "/v1/ask", json={"question": MARKER_QUESTION})
                else:
                    r = await c.get(self.lb_url + "/v1/search", params={"q": f"{MARKER_QUERY} {i}", "k": 3})
            except httpx.HTTPError as e:
                self.failures.append(f"{phase}: {type(e).__name__}: {e}")
                self._record(phase, None, None)
                continue
            if r.status_code != 200:
                self.failures.append(f"{phase}: HTTP {r.status_code} {r.text[:200]}")
                self._record(phase, None, r.headers.get("x-replica"))
                continue
            body = r.json()
            version = body.get("index_version")
            docs = [p["citation"]["doc_id"] for p in body.get("results", body.get("passages", []))]
            markers = [d for d in docs if d.startswith("census-")]
            if version not in self.expected:
                self.failures.append(f"{phase}: index_version {version!r} is neither version")
            elif not markers or markers[0] != self.expected[version]:
                self.failures.append(f"{phase}: index_version {version} but marker document {markers[:1]}")
            self._record(phase, version, r.headers.get("x-replica"))

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(timeout=15, limits=limits) as c:
            await asyncio.gather(*(self._client(n, c) for n in range(self.clients)))


async def drill(args: argparse.Namespace, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    root = work / "index"
    run_cli("build", "--fake-embedder", "--no-progress", "--corpus", str(write_corpus(work / "corpus-a", "alpha")),
            "--out", str(root), env=env)
    a = (root / "CURRENT").read_text().strip()
    run_cli("build", "--fake-embedder", "--no-progress", "--no-switch", "--corpus",
            str(write_corpus(work / "corpus-b", "bravo")), "--out", str(root), env=env)
    b = next(p.name for p in (root / "versions").iterdir() if p.name not in (a,) and not p.name.startswith("."))
    expected = {a: "census-alpha", b: "census-bravo"}
    # /v1/ask needs a calibration that fits the fake embedder's index: the packaged one, relabelled (a drill of
    # the HTTP path, not of answer quality)
    from indexer.store import load_index
    from service.ask.calibration import PACKAGED, Calibration

    Calibration.load(PACKAGED).relabelled_for(load_index(root).manifest).save(root / "calibration.json")

    r1 = Replica("r1", free_port(), root, env, work, args.replica_workers)
    r2 = Replica("r2", free_port(), root, env, work, args.replica_workers)
    lb_port, stats_sock = free_port(), work / "haproxy.sock"
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in (r1, r2))
    cfg = work / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(stats_sock=stats_sock, lb_port=lb_port, servers=servers))
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c refused the generated config: {check.stdout}{check.stderr}")
    lb: subprocess.Popen | None = None
    load: Load | None = None
    load_task: asyncio.Task | None = None
    events: list[dict] = []
    lb_stats: dict[str, dict[str, int]] = {}
    t0 = time.monotonic()

    def event(what: str, **kw) -> None:
        events.append({"t": round(time.monotonic() - t0, 2), "event": what, **kw})

    try:
        r1.start()
        r2.start()
        await asyncio.gather(wait_ready(r1.url, args.start_timeout, r1.proc),
                             wait_ready(r2.url, args.start_timeout, r2.proc))
        lb_log = open(work / "haproxy.log", "wb")
        lb = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=lb_log, stderr=subprocess.STDOUT,
                              start_new_session=True)
        lb_log.close()
        await wait_ready(f"http://127.0.0.1:{lb_port}", 30, lb)
        await wait_lb_up(stats_sock, "r1", 30)
        await wait_lb_up(stats_sock, "r2", 30)
        event("ready")

        load = Load(f"http://127.0.0.1:{lb_port}", args.clients, expected, args.max_requests)
        load_task = asyncio.create_task(load.run())
        await asyncio.sleep(args.phase_seconds)  # steady

        load.phase = "killed"
        r1.kill()
        event("SIGKILL r1")
        await asyncio.sleep(args.phase_seconds)

        load.phase = "restarted"
        r1.start()
        event("restart r1")
        await wait_ready(r1.url, args.start_timeout, r1.proc)
        event("r1 ready")
        await wait_lb_up(stats_sock, "r1", 30)
        event("HAProxy marks r1 UP")
        await asyncio.sleep(args.phase_seconds)

        load.phase = "rolling"
        out = run_cli("rollback", "--out", str(root), "--to", b, env=env)
        event("CURRENT -> B", cli=out.strip())
        async with httpx.AsyncClient(timeout=30) as c:
            for i, r in enumerate((r1, r2)):
                if r.workers == 1:
                    resp = await c.post(r.url + "/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
                    if resp.status_code != 200 or resp.json().get("current") != b:
                        raise RuntimeError(f"reload of {r.name} failed: {resp.status_code} {resp.text[:300]}")
                    event(f"reloaded {r.name}", **resp.json())
                else:  # several workers: SIGHUP to the supervisor replaces them one at a time, each loading B
                    r.proc.send_signal(signal.SIGHUP)
                    await wait_serving(r.url, b, r.workers, args.start_timeout)
                    event(f"reloaded {r.name}", how="SIGHUP", current=b)
                if i == 0:
                    await asyncio.sleep(args.phase_seconds)  # one replica on B, the other on A

        load.phase = "after"
        await asyncio.sleep(args.phase_seconds)
        load.stop.set()
        await asyncio.wait_for(load_task, 30)
        event("done")
        stats = haproxy_stats(stats_sock)
        lb_stats = {name: {"retries": int(row.get("wretr") or 0), "redispatches": int(row.get("wredis") or 0),
                           "requests": int(row.get("stot") or 0), "connection_errors": int(row.get("econ") or 0),
                           "response_errors": int(row.get("eresp") or 0)}
                    for name, row in stats.items()}
    finally:
        if load is not None:
            load.stop.set()
        if load_task is not None and not load_task.done():
            load_task.cancel()
        for r in (r1, r2):
            r.stop()
        if lb is not None and lb.poll() is None:
            lb.terminate()
            try:
                lb.wait(timeout=10)
            except subprocess.TimeoutExpired:
                lb.kill()
                lb.wait(timeout=10)

    problems = list(load.failures[:20])
    failures = sum(c["failed"] for c in load.by_phase.values())
    if load.by_phase.get("after", Counter()).get(a):
        problems.append(f"after the roll, {load.by_phase['after'][a]} responses still came from A")
    for phase in ("steady", "restarted"):
        served = load.replicas_by_phase.get(phase, Counter())
        if not (served.get("r1") and served.get("r2")):
            problems.append(f"{phase}: both replicas should have served requests, got {dict(served)}")
    if load.replicas_by_phase.get("killed", Counter()).get("r2", 0) == 0:
        problems.append("killed: r2 served nothing while r1 was down")
    for phase in ("steady", "killed", "restarted", "rolling", "after"):
        if not load.by_phase.get(phase):
            problems.append(f"{phase}: no requests")
    seen = sorted({v for c in load.by_phase.values() for v in c if v != "failed"})
    return {
        "requests": load.requests, "failures": failures, "inconsistent": len(load.failures) - failures,
        "versions": {"A": a, "B": b}, "versions_seen": seen,
        "phases": {p: dict(c) for p, c in load.by_phase.items()},
        "replicas": {p: dict(c) for p, c in load.replicas_by_phase.items()},
        "haproxy": lb_stats, "haproxy_terminations": termination_states(work / "haproxy.log"),
        "replica_workers": args.replica_workers, "clients": args.clients,
        "phase_seconds": args.phase_seconds,
        "seconds": round(time.monotonic() - t0, 1), "events": events, "problems": problems,
        "ok": not problems,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients (default 4)")
    p.add_argument("--phase-seconds", type=float, default=4.0, help="seconds of load per phase (default 4)")
    p.add_argument("--max-requests", type=int, default=200_000, help="stop the clients after this many")
    p.add_argument("--replica-workers", type=int, default=1,
                   help="REPORTQA_WORKERS of each replica (default 1); with more, the roll is a SIGHUP per replica")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds a replica may take to be ready")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, haproxy.cfg)")
    args = p.parse_args(argv)
    if not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()):
        print("error: haproxy is not installed (apt-get install haproxy; `make failover-test` does it)",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="reportqa-failover-"))
    try:
        result = asyncio.run(asyncio.wait_for(drill(args, work), timeout=600))
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}", "workdir": str(work)}))
        return 1  # the temp dir (replica and HAProxy logs) is kept for a look
    if result["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["workdir"] = str(work)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
