"""The Qdrant backend on qdrant-client's local mode: BM25 as sparse vectors equals bm25s, retrieval through
Qdrant equals retrieval through FAISS (every mode, filters, a small dense pool), the service serves the alias
and follows it on reload, an alias switch during searches loses no request, retention and the CLI."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.lexical import lexical_scores
from indexer.qdrant_store import (
    QdrantStore,
    alias_target,
    collection_name,
    collections_of,
    make_client,
    publish,
    switch_alias,
)
from indexer.store import load_index, version_dir
from indexer.text import analyze
from tests.conftest import ADMIN_TOKEN, DOC_ID, MARKER_QUERY, copy_root

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARKER_DOC = {"alpha": "census-alpha", "bravo": "census-bravo"}


def report_questions(split: str = "test") -> list[str]:
    from eval.datasets import load_report_set

    return [q.text for q in load_report_set(split).queries]


def store_for(client, index, alias: str = "reportqa") -> QdrantStore:
    return QdrantStore(client, collection_name(alias, index.version), int(index.manifest["model"]["dim"]),
                       vocab=index.lexical.vocab_dict)


@pytest.fixture
def qclient():
    """An in-memory Qdrant (local mode), closed after the test."""
    client = make_client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def fake(fake_index):
    return load_index(fake_index)


@pytest.fixture(scope="module")
def published(fake):
    """The fake-embedder report index in an in-memory Qdrant, twice: BM25 with global idf and with Modifier.IDF."""
    client = make_client()
    publish(client, fake, alias="global", mode="global")
    publish(client, fake, alias="modifier", mode="modifier")
    yield client
    client.close()


@pytest.mark.parametrize("mode", ["global", "modifier"])
def test_bm25_as_sparse_vectors_equals_bm25s(fake, published, mode):
    """Stored values idf·tf/(tf+k1·(1−b+b·dl/avgdl)) with query values 1.0 ("global"), or the same without idf
    and Modifier.IDF ("modifier"): the scores of bm25s (lucene) for every chunk, repeated terms included."""
    store = store_for(published, fake, mode)
    bigrams = fake.manifest["lexical"]["bigrams"]
    questions = report_questions("dev") + ["Kata Containers Kata Containers", "zzzunknownword", "the of and"]
    matched = 0
    for q in questions:
        want = lexical_scores(fake.lexical, q, bigrams)
        got = store.bm25_scores(analyze(q, bigrams))
        if not want.size:
            want = np.zeros(len(fake.chunks), np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=q)
        matched += int((want > 0).sum())
    assert matched > 100  # the questions really matched chunks


def _same_hits(a, b, what: str) -> None:
    assert [h.index for h in a] == [h.index for h in b], what
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5, err_msg=what)
    np.testing.assert_allclose([h.lexical for h in a], [h.lexical for h in b], atol=1e-4, err_msg=what)
    if a and a[0].dense is not None:
        np.testing.assert_allclose([h.dense for h in a], [h.dense for h in b], atol=1e-5, err_msg=what)


@pytest.mark.parametrize("pool,candidates,margin", [(256, 50, 32), (8, 50, 32), (8, 5, 1)])
def test_retrieval_through_qdrant_equals_retrieval_through_faiss(fake, published, fake_embedder, monkeypatch, pool,
                                                                 candidates, margin):
    """Every mode, with no filter, a document filter and a section filter; pool 8 makes the dense pool come
    from the store's search (the report's 39 chunks are otherwise all scored); 5 fusion candidates and a BM25
    margin of 1 make Qdrant return a BM25 top shorter than the chunks matching (bounded top + scores by id)."""
    from dataclasses import replace

    import service.retrieval as retrieval

    monkeypatch.setattr(retrieval, "DENSE_POOL", pool)
    store = store_for(published, fake, "global")
    store.LEXICAL_MARGIN = margin
    fusion = replace(retrieval.FusionConfig(), candidates=candidates)
    faiss_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion)
    qdrant_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion, store=store)
    filters = [{}, {"doc_id": DOC_ID}, {"section": "OpenInfra Asia"}, {"section": "Kata Containers"}]
    compared = 0
    for q in report_questions("test")[:30]:
        for mode in ("hybrid", "dense", "lexical"):
            for f in filters:
                a = faiss_r.search(q, k=10, mode=mode, **f)
                b = qdrant_r.search(q, k=10, mode=mode, **f)
                _same_hits(a, b, f"{q} {mode} {f}")
                compared += len(a)
    assert compared > 1000


class CountingClient:
    """A QdrantClient whose requests are counted (every method call of the client is one request)."""

    def __init__(self, client) -> None:
        self._wrapped = client
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self._wrapped, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def test_requests_per_query(fake, published, fake_embedder, monkeypatch):
    """Hybrid and dense: the dense pool and the BM25 top in one batched request, then one batch scoring the
    candidates (chunk vector, best sentence, BM25 of the pool rows outside the BM25 top); one request when
    every allowed chunk is in the pool (the report: 39 chunks) or in lexical mode. Results equal FAISS's."""
    import service.retrieval as retrieval

    counting = CountingClient(published)
    store = QdrantStore(counting, collection_name("global", fake.version), int(fake.manifest["model"]["dim"]),
                        vocab=fake.lexical.vocab_dict)
    faiss_r = retrieval.Retriever(fake, fake_embedder)
    qdrant_r = retrieval.Retriever(fake, fake_embedder, store=store)
    expected = {(256, "hybrid"): ["query_batch_points"], (256, "dense"): ["query_batch_points"],
                (256, "lexical"): ["query_points"],
                (8, "hybrid"): ["query_batch_points"] * 2, (8, "dense"): ["query_batch_points"] * 2,
                (8, "lexical"): ["query_points"]}
    questions = report_questions("test")[:15]
    lexical_only = 0
    for (pool, mode), want in expected.items():
        monkeypatch.setattr(retrieval, "DENSE_POOL", pool)
        for q in questions:
            for f in ({}, {"doc_id": DOC_ID}):
                counting.calls.clear()
                got = qdrant_r.search(q, k=10, mode=mode, **f)
                assert counting.calls == want, (pool, mode, q, f, counting.calls)
                _same_hits(faiss_r.search(q, k=10, mode=mode, **f), got, f"{pool} {mode} {q} {f}")
                if pool == 8 and mode == "hybrid":  # fusion candidates from BM25 alone were scored in request 2
                    pool_rows = set(store.search(qdrant_r.encode_query(q), 8)[0].tolist())
                    lexical_only += sum(h.index not in pool_rows for h in got)
        if mode != "hybrid":
            continue
        # /v1/ask's retrieval: the requests of a search; its lexical_top (the highest BM25 of any allowed chunk)
        # read from the BM25 top that search fetched, not from every chunk's score (a section of a few chunks:
        # all of them in the pool, one request)
        for q in questions:
            for f in ({}, {"doc_id": DOC_ID}, {"section": "OpenInfra Asia"}):
                counting.calls.clear()
                got = qdrant_r.retrieve(q, k=5, mode="hybrid", query_vec=qdrant_r.encode_query(q), **f)
                assert counting.calls == (["query_batch_points"] if "section" in f else want), counting.calls
                allowed = faiss_r.allowed_rows(**f)
                every = faiss_r.lexical_scores(q)
                every = every if allowed is None else every[allowed]
                assert got.lexical_max == pytest.approx(float(every.max()), rel=1e-5), (pool, q, f)
                assert faiss_r.retrieve(q, k=5, **f).lexical_max == pytest.approx(got.lexical_max, rel=1e-5)
    assert lexical_only > 0  # the second request really scored lexical-only candidates
    assert store.tie_extensions == 0


def test_a_bm25_top_whose_ties_run_past_the_limit_is_fetched_whole(qclient):
    """30 points: 10 score 2.0 on BM25, 20 tie at 1.0, 5 share no term. The top 15 with a margin of 2 ends
    inside the ties: one more request fetches every tied point, so retrieval's own tie-break (by chunk id)
    sees them all; hybrid asks for their dense scores in the second request."""
    from qdrant_client import models

    from indexer.qdrant_store import DENSE, SENTENCES, SPARSE, create_collection

    dim = 8
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((35, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    create_collection(qclient, "ties", dim)
    weights = [2.0] * 10 + [1.0] * 20 + [0.0] * 5
    qclient.upsert("ties", points=[
        models.PointStruct(id=i, vector={DENSE: v.tolist(), SENTENCES: [v.tolist()],
                                         SPARSE: models.SparseVector(indices=[0] if w else [1],
                                                                     values=[w] if w else [1.0])},
                           payload={"row": i}) for i, (v, w) in enumerate(zip(vecs, weights, strict=True))])
    counting = CountingClient(qclient)
    store = QdrantStore(counting, "ties", dim, ntotal=35, vocab={"a": 0, "b": 1})
    store.LEXICAL_MARGIN = 2
    want = np.asarray(weights, np.float32)
    r = store.query_scores(None, ["a"], None, pool=4, lexical_top=15)
    np.testing.assert_array_equal(r.lex, want)
    assert counting.calls == ["query_points", "query_points"] and store.tie_extensions == 1
    counting.calls.clear()
    q = vecs[34]
    r = store.query_scores(q, ["a"], None, pool=4, lexical_top=15)
    assert counting.calls == ["query_batch_points", "query_points", "query_batch_points"]
    assert set(range(30)) <= set(r.rows.tolist())  # every tied lexical candidate has dense scores
    pool = np.sort(np.argsort(-(vecs @ q), kind="stable")[:4])
    np.testing.assert_array_equal(r.pool, pool)
    np.testing.assert_allclose(r.lex, want)  # the pool's last point (no shared term) scores 0
    chunk, best = r.dense(np.arange(35)[np.isin(np.arange(35), r.rows)])
    np.testing.assert_allclose(chunk, vecs[r.rows] @ q, atol=1e-6)
    np.testing.assert_allclose(best, chunk, atol=1e-6)  # one sentence per point: its own vector
    counting.calls.clear()
    r = store.query_scores(q, ["a"], np.arange(12, 35), pool=4, lexical_top=5)  # a filter: ties among rows 12-29
    assert store.tie_extensions == 3 and len(counting.calls) == 3
    np.testing.assert_array_equal(r.lex[12:30], 1.0)


def _qdrant_app(root: Path, embedder, client, monkeypatch, **settings):
    """A TestClient of the service with REPORTQA_BACKEND=qdrant on `client` (an in-memory Qdrant shared with
    the test, which publishes into it)."""
    import service.state
    from service.backends import QdrantBackend
    from tests.conftest import make_client as make_test_client

    monkeypatch.setattr(service.state, "make_backend", lambda s: QdrantBackend(s, client))
    return make_test_client(root, embedder, backend="qdrant", admin_token=ADMIN_TOKEN, **settings)


def test_the_service_answers_the_same_through_qdrant(qclient, fake_index, fake, fake_embedder, monkeypatch):
    """/v1/search (every mode, filters) and /v1/ask give the same bodies on both backends, took_ms aside."""
    from tests.conftest import make_client as make_test_client

    publish(qclient, fake)

    def strip(body):  # took_ms aside; scores to 4 decimals (float32 sums in another order differ by ~1e-7)
        if isinstance(body, dict):
            return {k: strip(v) for k, v in body.items() if k != "took_ms"}
        if isinstance(body, list):
            return [strip(v) for v in body]
        return round(body, 4) if isinstance(body, float) else body

    requests = [("/v1/search", {"query": q, "k": 5, "mode": m, "filters": f})
                for q in report_questions("test")[:12] for m in ("hybrid", "dense", "lexical")
                for f in ({}, {"section": "OpenInfra Asia"})]
    requests += [("/v1/ask", {"question": q}) for q in report_questions("test")[:20]]
    with make_test_client(fake_index, fake_embedder) as fc:
        want = [fc.post(path, json=body) for path, body in requests]
    with _qdrant_app(fake_index, fake_embedder, qclient, monkeypatch) as qc:
        assert qc.get("/readyz").status_code == 200
        got = [qc.post(path, json=body) for path, body in requests]
    for (path, body), w, g in zip(requests, want, got, strict=True):
        assert w.status_code == g.status_code == 200, (path, body, g.text[:300])
        assert strip(g.json()) == strip(w.json()), (path, body)


def test_no_alias_is_not_ready_with_the_reason(qclient, fake_index, fake_embedder, monkeypatch):
    with _qdrant_app(fake_index, fake_embedder, qclient, monkeypatch) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "no alias 'reportqa'" in r.text and "--backend qdrant" in r.text


def test_reload_follows_the_alias_and_refuses_a_version_without_collection(qclient, two_versions, fake_embedder,
                                                                           tmp_path, monkeypatch):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    publish(qclient, load_index(version_dir(root, a)))
    with _qdrant_app(root, fake_embedder, qclient, monkeypatch) as c:
        assert c.get("/readyz").json()["index_version"] == a
        r = c.post("/v1/admin/reload", headers=AUTH, json={"version": b})  # B has no collection yet
        assert r.status_code >= 400 and "no collection" in r.text
        assert c.get("/readyz").json()["index_version"] == a  # still serving A
        publish(qclient, load_index(version_dir(root, b)))  # B written and the alias switched to it
        r = c.post("/v1/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"previous": a, "current": b}
        body = c.get("/v1/search", params={"q": MARKER_QUERY, "k": 1}).json()
        assert body["index_version"] == b and body["results"][0]["citation"]["doc_id"] == MARKER_DOC["bravo"]
        switch_alias(qclient, "reportqa", collection_name("reportqa", a))  # a rollback is an alias switch
        assert c.post("/v1/admin/reload", headers=AUTH).json() == {"previous": b, "current": a}


def test_alias_switches_during_searches_lose_no_request(qclient, two_versions, fake_embedder, record_property):
    """Four threads search through the alias while the main thread switches it between A's and B's collections
    200 times; every search succeeds and returns exactly A's or B's answer."""
    root, a, b = two_versions
    idx = {v: load_index(version_dir(root, v)) for v in (a, b)}
    for v in (a, b):
        publish(qclient, idx[v])
    q = np.asarray(fake_embedder.encode([MARKER_QUERY])[0], dtype=np.float32).tolist()

    def search(collection: str) -> list[str]:  # chunk ids (hashes of document, headings and text) of the top 3
        res = qclient.query_points(collection, query=q, using="chunk", limit=3, with_payload=["chunk_id"])
        return [p.payload["chunk_id"] for p in res.points]

    expected = {v: search(collection_name("reportqa", v)) for v in (a, b)}  # each asked by its concrete name
    assert len(expected[a]) == 3 and expected[a] != expected[b]  # the answers can be told apart (the census chunk)
    stop = threading.Event()
    counts = {a: 0, b: 0}
    failures: list[str] = []
    lock = threading.Lock()

    def searcher() -> None:
        while not stop.is_set():
            try:
                got = search("reportqa")
            except Exception as e:  # a lost request
                failures.append(f"{type(e).__name__}: {e}")
                continue
            which = [v for v in (a, b) if expected[v] == got]
            with lock:
                if which:
                    counts[which[0]] += 1
                else:
                    failures.append(f"neither version's answer: {got}")

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    switches = 0

    def done() -> int:
        with lock:
            return counts[a] + counts[b] + len(failures)

    try:
        for i in range(200):
            switch_alias(qclient, "reportqa", collection_name("reportqa", a if i % 2 else b))
            switches += 1
            seen = done()  # let the searchers run a few searches against this alias target before the next switch
            for _ in range(20_000):
                if done() >= seen + 4:
                    break
                time.sleep(0.0005)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    searches = counts[a] + counts[b] + len(failures)
    print(f"\nalias switches: {switches}; searches through the alias: {searches}, failed or mixed: {len(failures)}; "
          f"answered by A: {counts[a]}, by B: {counts[b]}")
    record_property("alias_switch", {"switches": switches, "searches": searches, "failures": len(failures)})
    assert failures == []
    assert counts[a] > 0 and counts[b] > 0
    assert alias_target(qclient, "reportqa") == collection_name("reportqa", a)


def test_reloads_following_alias_switches_while_clients_search(qclient, two_versions, fake_embedder, tmp_path,
                                                                monkeypatch, record_property):
    """The service on the Qdrant backend: the alias alternates between A and B, each switch followed by
    POST /v1/admin/reload, while four client threads search and ask; every request succeeds and its results
    come from the version its index_version names."""
    root, a, b = copy_root(two_versions, tmp_path / "index")
    for v in (b, a):
        publish(qclient, load_index(version_dir(root, v)))  # the alias ends on A
    expected = {a: MARKER_DOC["alpha"], b: MARKER_DOC["bravo"]}
    stop = threading.Event()
    failures: list[str] = []
    served = {a: 0, b: 0}
    lock = threading.Lock()
    with _qdrant_app(root, fake_embedder, qclient, monkeypatch) as c:
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
                docs = [p["citation"]["doc_id"] for p in body.get("results", body.get("passages", []))]
                version = body["index_version"]
                if version not in expected or expected[version] not in docs[:1]:
                    failures.append(f"{mode}: index_version {version} but first passage from {docs[:1]}")
                with lock:
                    served[version] = served.get(version, 0) + 1

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        reloads, reload_failures = 0, []
        try:
            for i in range(40):
                target = b if i % 2 == 0 else a
                switch_alias(qclient, "reportqa", collection_name("reportqa", target))
                r = c.post("/v1/admin/reload", headers=AUTH)
                reloads += 1
                if r.status_code != 200 or r.json()["current"] != target:
                    reload_failures.append(f"{r.status_code} {r.text[:200]}")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    requests = sum(served.values()) + len(failures)
    print(f"\nalias switches + reloads: {reloads} ({len(reload_failures)} failed); client requests: {requests}, "
          f"failed or inconsistent: {len(failures)}; served by A: {served[a]}, by B: {served[b]}")
    record_property("qdrant_reloads", {"reloads": reloads, "requests": requests, "failures": len(failures)})
    assert reload_failures == [] and failures == []
    assert served[a] > 0 and served[b] > 0


def test_publish_keeps_n_collections_never_the_aliased_one_and_reuses_a_complete_one(qclient, two_versions):
    root, a, b = two_versions
    ia, ib = load_index(version_dir(root, a)), load_index(version_dir(root, b))
    r = publish(qclient, ia, keep=1)
    ca, cb = collection_name("reportqa", a), collection_name("reportqa", b)
    assert (r.collection, r.switched, r.reused, r.points) == (ca, True, False, len(ia.chunks))
    r = publish(qclient, ib, keep=1, activate=False)  # B written, alias still on A: keep=1 cannot drop A
    assert collections_of(qclient, "reportqa") == sorted([ca, cb])
    assert alias_target(qclient, "reportqa") == collection_name("reportqa", a)
    r = publish(qclient, ib, keep=1)  # B complete already: reused, alias moved, A pruned
    assert r.reused and r.pruned == [collection_name("reportqa", a)]
    assert collections_of(qclient, "reportqa") == [collection_name("reportqa", b)]
    # an incomplete collection (an upload that died) is rewritten, not reused
    qclient.delete(collection_name("reportqa", b), points_selector=[0, 1])
    switch_alias(qclient, "reportqa", collection_name("reportqa", b))
    from indexer.qdrant_store import QdrantBackendError

    with pytest.raises(QdrantBackendError, match="incomplete"):
        publish(qclient, ib)  # not while the alias names it
    publish(qclient, ia)
    r = publish(qclient, ib)
    assert not r.reused and qclient.count(r.collection, exact=True).count == len(ib.chunks)


@pytest.mark.slow
def test_cli_build_backend_qdrant_then_the_service_serves_the_alias(tmp_path, fake_embedder):
    """`python -m indexer build --backend qdrant --qdrant-path` writes the version and its collection and
    switches both; a service with REPORTQA_QDRANT_PATH serves it (local mode on disk: one process at a time)."""
    import subprocess
    import sys

    from tests.conftest import CORPUS, ROOT, calibrate_for_tests
    from tests.conftest import make_client as make_test_client

    out, qpath = tmp_path / "index", tmp_path / "qdrant"
    cmd = [sys.executable, "-m", "indexer", "build", "--corpus", str(CORPUS), "--out", str(out), "--fake-embedder",
           "--no-progress", "--backend", "qdrant", "--qdrant-path", str(qpath)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "alias reportqa switched to it" in p.stdout
    version = load_index(out).version
    calibrate_for_tests(out)
    with make_test_client(out, fake_embedder, backend="qdrant", qdrant_path=qpath) as c:
        body = c.get("/readyz").json()
        assert body["index_version"] == version
        assert c.get("/v1/search", params={"q": "Kata Containers", "k": 3}).json()["results"]
    p = subprocess.run([*cmd[:3], "qdrant-publish", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)  # no --qdrant-url/--qdrant-path: a clean error
    assert p.returncode == 5 and "needs --qdrant-url or --qdrant-path" in p.stderr


class _OnDisk:
    """qdrant-client local mode at `path`, opened for a moment (the CLI under test opens it too: one at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        self.client = make_client(path=self.path)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()


def test_rollback_with_the_qdrant_backend_moves_current_and_the_alias(two_versions, tmp_path, monkeypatch, capsys):
    """`rollback --backend qdrant`: CURRENT and the alias move together (the alias in one request, nothing
    pruned); a version whose collection is gone is written first; if the alias cannot move, CURRENT is put
    back; without a Qdrant to open nothing moves."""
    import indexer.qdrant_store
    from indexer.cli import main
    from indexer.store import read_current, set_current

    root, a, b = copy_root(two_versions, tmp_path / "index")
    qpath = tmp_path / "qdrant"
    ca, cb = collection_name("reportqa", a), collection_name("reportqa", b)
    with _OnDisk(qpath) as client:
        for v in (a, b):
            publish(client, load_index(version_dir(root, v)))  # the alias ends on B
    set_current(root, b)
    args = ["--out", str(root), "--backend", "qdrant", "--qdrant-path", str(qpath)]
    assert main(["rollback", *args]) == 0
    assert f"CURRENT: {b} -> {a}" in capsys.readouterr().out
    assert read_current(root) == a
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == ca
        assert collections_of(client, "reportqa") == sorted([ca, cb])  # nothing pruned
        client.delete_collection(cb)  # B's collection pruned meanwhile
    assert main(["rollback", "--to", b, *args]) == 0
    assert "written" in capsys.readouterr().out
    assert read_current(root) == b
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == cb
        assert client.count(cb, exact=True).count == len(load_index(version_dir(root, b)).chunks)

    def refused(*a, **k):
        raise RuntimeError("the server said no")

    monkeypatch.setattr(indexer.qdrant_store, "publish", refused)
    assert main(["rollback", "--to", a, *args]) == 5
    assert f"CURRENT put back to {b}" in capsys.readouterr().err
    assert read_current(root) == b
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == cb
    monkeypatch.delenv("REPORTQA_QDRANT_URL", raising=False)
    monkeypatch.delenv("REPORTQA_QDRANT_PATH", raising=False)
    assert main(["rollback", "--out", str(root), "--backend", "qdrant"]) == 5  # no Qdrant named: nothing moves
    assert "needs --qdrant-url or --qdrant-path" in capsys.readouterr().err and read_current(root) == b


def test_ensure_with_the_qdrant_backend_points_the_alias_at_currents_collection(two_versions, tmp_path, monkeypatch,
                                                                                capsys, fake_embedder):
    """`ensure --backend qdrant` on an up-to-date index writes CURRENT's collection when it has none and
    points the alias at it; on a stale one it builds and publishes (as `build --backend qdrant`)."""
    import indexer.cli
    import indexer.embed
    from indexer.cli import main
    from indexer.store import read_current

    root, a, b = copy_root(two_versions, tmp_path / "index")
    qpath = tmp_path / "qdrant"
    args = ["ensure", "--out", str(root), "--no-progress", "--backend", "qdrant", "--qdrant-path", str(qpath)]
    monkeypatch.setattr(indexer.cli, "stale_reason", lambda corpus, out: None)  # up to date (A)
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == collection_name("reportqa", a)
        publish(client, load_index(version_dir(root, b)))  # the alias moved elsewhere by hand
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == collection_name("reportqa", a)
    # stale: built again (the fake embedder standing in for the model) and published
    monkeypatch.setattr(indexer.cli, "stale_reason", lambda corpus, out: "the corpus has changed")
    monkeypatch.setattr(indexer.embed, "SentenceTransformerEmbedder", lambda *a, **k: fake_embedder)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "doc.md").write_text("# Census\n\nThe flamingo census counted flamingos at the lake.\n")
    assert main([*args, "--corpus", str(corpus)]) == 0
    new = read_current(root)
    assert new not in (a, b)
    with _OnDisk(qpath) as client:
        assert alias_target(client, "reportqa") == collection_name("reportqa", new)
