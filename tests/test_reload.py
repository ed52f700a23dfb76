"""Hot reload (HTTP and SIGHUP), snapshots per request, start-up retries, admin token and API keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from indexer.embed import FakeEmbedder
from indexer.store import read_current, set_current
from tests.conftest import ADMIN_TOKEN, MARKER_QUERY, ROOT, copy_root, make_client, write_small_corpus
from tests.servers import stop_process

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARKER_DOC = {"alpha": "census-alpha", "bravo": "census-bravo"}


def _admin_client(root: Path, embedder, **settings):
    return make_client(root, embedder, admin_token=ADMIN_TOKEN, **settings)


def _marker_doc(body: dict) -> str | None:
    docs = [r["citation"]["doc_id"] for r in body.get("results", body.get("passages", []))]
    markers = [d for d in docs if d.startswith("census-")]
    return markers[0] if markers else None


def test_100_reloads_while_clients_search(two_versions, fake_embedder, tmp_path, record_property):
    """Reloads alternate between A and B while four client threads search and ask; every request succeeds and
    its results come from the version its index_version names."""
    root, a, b = copy_root(two_versions, tmp_path / "index")
    expected = {a: MARKER_DOC["alpha"], b: MARKER_DOC["bravo"]}
    stop = threading.Event()
    failures: list[str] = []
    served: dict[str, int] = {a: 0, b: 0}
    lock = threading.Lock()

    with _admin_client(root, fake_embedder) as c:
        def client_loop(n: int) -> None:
            i = 0
            while not stop.is_set():
                mode = ("lexical", "hybrid", "dense", "ask")[(n + i) % 4]
                i += 1
                if mode == "ask":
                    r = c.post("/v1/ask", json={"question": "Who counted the flamingos for the flamingo census?"})
                else:
                    r = c.get("/v1/search", params={"q": MARKER_QUERY, "mode": mode, "k": 3})
                if r.status_code != 200:
                    failures.append(f"{mode}: {r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                version = body["index_version"]
                if version not in expected or _marker_doc(body) != expected[version]:
                    failures.append(f"{mode}: index_version {version} but marker {_marker_doc(body)}")
                with lock:
                    served[version] = served.get(version, 0) + 1

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        reloads, reload_failures = 0, []
        try:
            for i in range(100):
                target = b if i % 2 == 0 else a
                r = c.post("/v1/admin/reload", headers=AUTH, json={"version": target})
                reloads += 1
                if r.status_code != 200 or r.json() != {"previous": a if target == b else b, "current": target}:
                    reload_failures.append(f"{r.status_code} {r.text[:200]}")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        requests = sum(served.values()) + len(failures)
        print(f"\nreloads: {reloads} ({len(reload_failures)} failed); client requests: {requests}, "
              f"failed or inconsistent: {len(failures)}; served by A: {served[a]}, by B: {served[b]}")
        record_property("reloads", {"reloads": reloads, "reload_failures": len(reload_failures),
                                    "requests": requests, "failed_requests": len(failures)})
        assert reload_failures == []
        assert failures == []
        assert served[a] > 0 and served[b] > 0  # the clients really ran across the reloads
        assert c.get("/readyz").json()["index_version"] == a  # the 100th reload went back to A


class GatedEmbedder(FakeEmbedder):
    """Blocks encoding one query until released: a request in flight across a reload."""

    def __init__(self, slow_text: str) -> None:
        super().__init__()
        self.slow_text = slow_text
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, batch_size=32, progress=False):
        if self.slow_text in texts:
            self.entered.set()
            self.release.wait(30)
        return super().encode(texts, batch_size, progress)


def test_a_request_in_flight_finishes_on_the_version_it_started_with(two_versions, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    slow = "flamingo census at dawn"
    embedder = GatedEmbedder(slow)
    result: dict = {}
    with _admin_client(root, embedder) as c:
        t = threading.Thread(target=lambda: result.update(
            r=c.get("/v1/search", params={"q": slow, "mode": "dense", "k": 3})))
        t.start()
        assert embedder.entered.wait(30)
        r = c.post("/v1/admin/reload", headers=AUTH, json={"version": b})
        assert r.status_code == 200 and r.json() == {"previous": a, "current": b}
        assert c.get("/v1/search", params={"q": MARKER_QUERY, "mode": "lexical"}).json()["index_version"] == b
        embedder.release.set()
        t.join(30)
    body = result["r"].json()
    assert result["r"].status_code == 200 and body["index_version"] == a
    assert _marker_doc(body) == MARKER_DOC["alpha"]


def test_reload_follows_current_and_rollback(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    with _admin_client(root, fake_embedder) as c:
        r = c.post("/v1/admin/reload", headers=AUTH)  # CURRENT still names A: reloaded and re-checked
        assert r.status_code == 200 and r.json() == {"previous": a, "current": a}
        set_current(root, b)
        r = c.post("/v1/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"previous": a, "current": b}
        assert _marker_doc(c.get("/v1/search", params={"q": MARKER_QUERY}).json()) == MARKER_DOC["bravo"]
        assert c.get("/v1/index").json()["index_version"] == b
        # python -m indexer rollback points CURRENT back at A; a reload serves it
        out = subprocess.run([sys.executable, "-m", "indexer", "rollback", "--out", str(root)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert read_current(root) == a
        assert c.post("/v1/admin/reload", headers=AUTH).json() == {"previous": b, "current": a}
        listing = c.get("/v1/admin/versions", headers=AUTH).json()
        assert [v["version"] for v in listing["versions"]] == [a, b]
        assert listing["current"] == listing["serving"] == a and listing["last_reload"]["ok"] is True
        metrics = c.get("/metrics").text
        assert 'reportqa_events_total{event="reload",label="ok"} 3.0' in metrics


def test_reload_refuses_unknown_versions_and_bad_bodies(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    with _admin_client(root, fake_embedder) as c:
        for version in ("2020-01-01T00-00-00Z-000000", "../versions", ".tmp-x", "a/b"):
            r = c.post("/v1/admin/reload", headers=AUTH, json={"version": version})
            assert r.status_code == 422, r.text
            assert r.json()["serving"] == a and "version" in r.json()["detail"]
        assert c.post("/v1/admin/reload", headers=AUTH, json={"version": b, "extra": 1}).status_code == 422
        assert c.post("/v1/admin/reload", headers=AUTH, json={"version": ""}).status_code == 422
        assert c.get("/readyz").json()["index_version"] == a


def test_admin_endpoints_are_off_without_a_token(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    for token in (None, ""):
        with make_client(root, fake_embedder, admin_token=token) as c:
            for r in (c.post("/v1/admin/reload", headers=AUTH, json={"version": b}),
                      c.get("/v1/admin/versions", headers=AUTH)):
                assert r.status_code == 404 and "REPORTQA_ADMIN_TOKEN" in r.json()["detail"]
            assert c.get("/readyz").json()["index_version"] == a


def test_admin_token_missing_wrong_right(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    with _admin_client(root, fake_embedder) as c:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "},
                        {"X-API-Key": ADMIN_TOKEN}):
            r = c.post("/v1/admin/reload", headers=headers, json={"version": b})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (headers, r.text)
        for wrong in (ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], ADMIN_TOKEN.upper(), "é"):
            header = f"Bearer {wrong}".encode()  # non-ASCII bytes too
            r = c.post("/v1/admin/reload", headers={"Authorization": header}, json={"version": b})
            assert r.status_code == 403, r.text
        assert c.get("/readyz").json()["index_version"] == a  # nothing was reloaded
        r = c.post("/v1/admin/reload", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}, json={"version": b})
        assert r.status_code == 200 and r.json()["current"] == b
        schema = c.get("/openapi.json").json()["paths"]["/v1/admin/reload"]["post"]["responses"]
        assert {"200", "401", "403", "404", "422", "500"} <= set(schema)


def test_api_keys_guard_the_read_endpoints_only(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    with make_client(root, fake_embedder, api_keys="key-one, key-two") as c:
        reads = [lambda h: c.get("/v1/search", params={"q": MARKER_QUERY}, headers=h),
                 lambda h: c.post("/v1/search", json={"query": MARKER_QUERY}, headers=h),
                 lambda h: c.post("/v1/ask", json={"question": "who counted flamingos?"}, headers=h),
                 lambda h: c.get("/v1/index", headers=h)]
        for read in reads:
            r = read({})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert read({"X-API-Key": "key-three"}).status_code == 403
            assert read({"Authorization": "Bearer key-on"}).status_code == 403
            assert read({"Authorization": "Bearer key-two"}).status_code == 200
            assert read({"X-API-Key": "key-one"}).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/"):
            assert c.get(path).status_code == 200, path
    with make_client(root, fake_embedder) as c:  # no keys configured: open
        assert c.get("/v1/search", params={"q": MARKER_QUERY}).status_code == 200


def test_start_up_retries_until_an_index_is_built(tmp_path, fake_embedder):
    from indexer.build import build_index

    root = tmp_path / "index"
    with make_client(root, fake_embedder, load_retry_initial=0.05, load_retry_max=0.2) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "no index at" in r.json()["detail"]
        assert "retrying in" in r.json()["detail"]
        version = build_index(write_small_corpus(tmp_path / "corpus", "alpha"), root, fake_embedder).index_version
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/readyz").json() == {"status": "ready", "index_version": version}
        assert c.get("/v1/search", params={"q": MARKER_QUERY}).json()["index_version"] == version


def test_the_model_is_loaded_once_across_reloads(two_versions, tmp_path, monkeypatch):
    import service.state

    root, a, b = copy_root(two_versions, tmp_path / "index")
    made = []

    def factory(*args, **kwargs):
        made.append(FakeEmbedder())
        return made[-1]

    monkeypatch.setattr(service.state, "SentenceTransformerEmbedder", factory)
    with _admin_client(root, None) as c:
        for v in (b, a, b):
            assert c.post("/v1/admin/reload", headers=AUTH, json={"version": v}).status_code == 200
        assert len(made) == 1
        embedder = c.app.state.resources.snapshot.embedder
        assert getattr(embedder, "inner", embedder) is made[0]  # the torch encoder, micro-batched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE = """
import sys, uvicorn
from indexer.embed import FakeEmbedder
from service.config import Settings
from service.main import create_app
uvicorn.run(create_app(Settings(index_dir=sys.argv[1], admin_token=sys.argv[3]), embedder=FakeEmbedder()),
            host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


def _wait_for(url: str, version: str, deadline: float) -> dict:
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            body = httpx.get(url, timeout=2).json()
            if body.get("index_version") == version:
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return body


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_what_current_names(two_versions, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(root), str(port), ADMIN_TOKEN], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        assert _wait_for(url, a, time.monotonic() + 60).get("index_version") == a
        set_current(root, b)
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(url, b, time.monotonic() + 30).get("index_version") == b
        assert proc.poll() is None  # SIGHUP reloaded, it did not kill the server
        r = httpx.get(f"http://127.0.0.1:{port}/v1/search", params={"q": MARKER_QUERY}, timeout=5).json()
        assert r["index_version"] == b and _marker_doc(r) == MARKER_DOC["bravo"]
        (root / "CURRENT").write_text("garbage!\n")  # a failed SIGHUP reload keeps B serving
        proc.send_signal(signal.SIGHUP)
        deadline, last = time.monotonic() + 30, None
        while last is None and time.monotonic() < deadline:
            time.sleep(0.05)
            last = httpx.get(f"http://127.0.0.1:{port}/v1/admin/versions", headers=AUTH, timeout=5).json()
            last = last["last_reload"] if last["last_reload"] and not last["last_reload"]["ok"] else None
        assert last is not None and "does not name a version" in last["detail"] and last["serving"] == b
        assert httpx.get(url, timeout=5).json() == {"status": "ready", "index_version": b}
    finally:
        stop_process(proc)
    assert b"Traceback" not in proc.stderr.read()


def test_reloads_are_serialized(two_versions, fake_embedder, tmp_path, monkeypatch):
    from service.state import Resources

    root, a, b = copy_root(two_versions, tmp_path / "index")
    inside, most = [0], [0]
    guard = threading.Lock()
    build = Resources._build

    def counting_build(self, path):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.01)  # widen the window two unserialized reloads would overlap in
            return build(self, path)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(Resources, "_build", counting_build)
    with _admin_client(root, fake_embedder) as c:
        codes: list[int] = []

        def reloads(version: str) -> None:
            for _ in range(8):
                codes.append(c.post("/v1/admin/reload", headers=AUTH, json={"version": version}).status_code)

        threads = [threading.Thread(target=reloads, args=(v,)) for v in (a, b, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert codes == [200] * 24 and most[0] == 1
