"""The launcher (`python -m service.serve`): REPORTQA_WORKERS processes behind one port, each loaded before it
accepts; SIGHUP to the supervisor replaces the workers one at a time, each serving what CURRENT names."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from indexer.store import set_current
from service.serve import workers_from_env
from tests.conftest import MARKER_QUERY, ROOT, copy_root
from tests.servers import stop_process


def test_workers_from_env():
    assert workers_from_env({}) == 1
    assert workers_from_env({"REPORTQA_WORKERS": " 3 "}) == 3
    for bad in ("two", "0", "65", "-1"):
        with pytest.raises(SystemExit, match="REPORTQA_WORKERS"):
            workers_from_env({"REPORTQA_WORKERS": bad})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """The worker processes of a uvicorn supervisor (multiprocessing's resource tracker left out)."""
    pids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            pids += [int(x) for x in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            continue
    workers = []
    for child in pids:
        try:
            cmdline = open(f"/proc/{child}/cmdline", "rb").read()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return sorted(workers)


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the launcher exited with {proc.returncode} while waiting for {what}"
        try:
            last = predicate()
            if last:
                return last
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last: {last})")


def test_two_workers_share_the_port_and_sighup_rolls_them_onto_current(two_versions, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "PORT": str(port),
           "REPORTQA_WORKERS": "2", "REPORTQA_INDEX_DIR": str(root)}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.serve", "--fake-embedder"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as c:
            def versions() -> set[str]:
                return {c.get(url + "/v1/search", params={"q": MARKER_QUERY, "mode": "lexical", "k": 1},
                              headers={"Connection": "close"}).json()["index_version"] for _ in range(12)}

            _wait(lambda: c.get(url + "/readyz").status_code == 200, 60, "readiness", proc)
            workers = _wait(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 30, "2 workers", proc)
            assert versions() == {a}  # every worker loaded before it accepted: no 503 on the shared socket
            # metrics add up across the workers (prometheus-client multiprocess mode): one scrape sees them all
            text = c.get(url + "/metrics", headers={"Connection": "close"}).text
            searches = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("reportqa_requests_total{") and 'route="/v1/search"' in line)
            assert searches >= 12, text[:2000]
            set_current(root, b)
            proc.send_signal(signal.SIGHUP)  # the supervisor replaces each worker by one loaded with B
            _wait(lambda: versions() == {b}, 60, "both workers serving B", proc)
            new = _wait(lambda: len(_children(proc.pid)) == 2 and set(_children(proc.pid)).isdisjoint(workers)
                        and _children(proc.pid), 30, "two new workers", proc)
            assert len(new) == 2
            assert versions() == {b}
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]


def test_connections_get_tcp_nodelay_even_from_an_inherited_socket():
    """A worker's listening socket comes from uvicorn's supervisor and reports proto 0, so asyncio does not set
    TCP_NODELAY on its connections: every response then waited ~40 ms for the client's delayed ACK."""
    import socket

    from service.server import _no_delay

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    inherited = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=os.dup(server.fileno()))
    client = socket.create_connection(server.getsockname())
    conn, _ = inherited.accept()
    try:
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0

        class Transport:
            def get_extra_info(self, name):
                return conn if name == "socket" else None

        _no_delay(Transport())
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in (conn, client, inherited, server):
            s.close()
