"""The Qdrant backend against a real Qdrant server: runs only when REPORTQA_QDRANT_URL is set (e.g.
`docker-compose --profile qdrant up -d qdrant` and REPORTQA_QDRANT_URL=http://127.0.0.1:6333), else skipped.

What it covers that local mode cannot: the network path (REST client), payload indexes in filters, a collection
split into 2 shards (BM25 with global idf stays exact; retrieval equals FAISS), replication (only on a cluster of
at least 2 peers, else that test skips), snapshots (create, list, delete), and alias switches during searches
over the network. Every collection and alias it makes has a random prefix and is deleted afterwards.
Not run on this machine (no Qdrant server can run here).
"""

from __future__ import annotations

import os
import secrets
import threading

import numpy as np
import pytest

URL = os.environ.get("REPORTQA_QDRANT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="REPORTQA_QDRANT_URL is not set: no Qdrant server to test against "
                                                "(README: Backends: FAISS or Qdrant, how to run the server suite)")


@pytest.fixture(scope="module")
def server():
    from indexer.qdrant_store import make_client

    client = make_client(URL, api_key=os.environ.get("REPORTQA_QDRANT_API_KEY") or None)
    prefix = f"reportqa-test-{secrets.token_hex(3)}"
    yield client, prefix
    from qdrant_client import models

    for a in client.get_aliases().aliases:
        if a.alias_name.startswith(prefix):
            client.update_collection_aliases(change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a.alias_name))])
    for c in client.get_collections().collections:
        if c.name.startswith(prefix):
            client.delete_collection(c.name)
    client.close()


@pytest.fixture(scope="module")
def fake(fake_index):
    from indexer.store import load_index

    return load_index(fake_index)


def test_contract_over_the_network_with_payload_indexes(server):
    from indexer.qdrant_store import QdrantStore
    from tests.test_store_contract import DIM, exact, queries, unit_rows, upload_dense

    client, prefix = server
    vectors = unit_rows(300, DIM, 7)
    name = f"{prefix}-contract"
    upload_dense(client, name, vectors)
    store = QdrantStore(client, name, DIM)
    assert store.ntotal == 300
    for q in queries():
        rows, scores = store.search(q, 10)
        want_rows, want_scores = exact(vectors, q, 10)
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        for allowed in (np.arange(100, 200), np.array([3, 17, 42, 150, 299])):
            assert store.search(q, 5, allowed)[0].tolist() == exact(vectors, q, 5, allowed)[0].tolist()
        by_payload = store.search_filtered(q, 5, doc_id="d1")[0].tolist()
        assert by_payload == exact(vectors, q, 5, np.arange(100, 200))[0].tolist()
    np.testing.assert_allclose(store.fetch(np.array([299, 0, 0])), vectors[[299, 0, 0]], atol=1e-7)


def test_two_shards_global_idf_bm25_and_retrieval_equal_faiss(server, fake, fake_embedder, monkeypatch):
    """Sharded: BM25 with idf multiplied into the stored values stays exact (nothing computed per shard);
    retrieval equals FAISS with every chunk in the pool (one request) and with a pool of 8, 5 fusion
    candidates and a BM25 margin of 1 (two requests: the bounded BM25 top, scores by id)."""
    from dataclasses import replace

    import service.retrieval as retrieval
    from indexer.lexical import lexical_scores
    from indexer.qdrant_store import QdrantStore, collection_name, publish
    from indexer.text import analyze
    from tests.test_qdrant_backend import CountingClient, _same_hits, report_questions

    client, prefix = server
    alias = f"{prefix}-sharded"
    publish(client, fake, alias=alias, shards=2)
    info = client.get_collection(collection_name(alias, fake.version))
    assert info.config.params.shard_number == 2
    store = QdrantStore(client, alias, int(fake.manifest["model"]["dim"]), vocab=fake.lexical.vocab_dict)
    bigrams = fake.manifest["lexical"]["bigrams"]
    for q in report_questions("dev"):
        np.testing.assert_allclose(store.bm25_scores(analyze(q, bigrams)), lexical_scores(fake.lexical, q, bigrams),
                                   rtol=1e-5, atol=1e-5)
    counting = CountingClient(client)
    store = QdrantStore(counting, alias, int(fake.manifest["model"]["dim"]), vocab=fake.lexical.vocab_dict)
    for pool, candidates, margin in ((256, 50, 32), (8, 5, 1)):
        monkeypatch.setattr(retrieval, "DENSE_POOL", pool)
        store.LEXICAL_MARGIN = margin
        fusion = replace(retrieval.FusionConfig(), candidates=candidates)
        faiss_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion)
        qdrant_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion, store=store)
        for q in report_questions("test")[:20]:
            for mode in ("hybrid", "dense", "lexical"):
                counting.calls.clear()
                got = qdrant_r.search(q, k=10, mode=mode)
                _same_hits(faiss_r.search(q, k=10, mode=mode), got, f"{q} {mode} pool {pool}")
                assert len(counting.calls) <= (1 if pool == 256 or mode == "lexical" else 2) + store.tie_extensions


def test_replication(server, fake):
    from indexer.qdrant_store import collection_name, publish

    client, prefix = server
    peers = len(getattr(client.cluster_status(), "peers", None) or {})
    if peers < 2:
        pytest.skip(f"the server at {URL} is not a cluster of at least 2 peers ({peers}): replication not tested")
    alias = f"{prefix}-replicated"
    publish(client, fake, alias=alias, shards=2, replicas=2)
    info = client.get_collection(collection_name(alias, fake.version))
    assert info.config.params.replication_factor == 2
    assert client.count(alias, exact=True).count == len(fake.chunks)


def test_snapshots(server, fake):
    from indexer.qdrant_store import collection_name, publish

    client, prefix = server
    alias = f"{prefix}-snap"
    publish(client, fake, alias=alias)
    name = collection_name(alias, fake.version)
    snap = client.create_snapshot(name, wait=True)
    assert snap.name in [s.name for s in client.list_snapshots(name)]
    client.delete_snapshot(name, snap.name, wait=True)


def test_alias_switches_over_the_network_lose_no_search(server, two_versions, fake_embedder):
    from indexer.qdrant_store import collection_name, publish, switch_alias
    from indexer.store import load_index, version_dir
    from tests.conftest import MARKER_QUERY

    client, prefix = server
    root, a, b = two_versions
    alias = f"{prefix}-switch"
    for v in (a, b):
        publish(client, load_index(version_dir(root, v)), alias=alias)
    q = np.asarray(fake_embedder.encode([MARKER_QUERY])[0], dtype=np.float32).tolist()

    def search(c: str) -> list[str]:
        return [p.payload["chunk_id"] for p in client.query_points(c, query=q, using="chunk", limit=3,
                                                                  with_payload=["chunk_id"]).points]

    expected = [search(collection_name(alias, v)) for v in (a, b)]
    stop, failures, count = threading.Event(), [], [0]

    def searcher() -> None:
        while not stop.is_set():
            try:
                got = search(alias)
                if got not in expected:
                    failures.append(f"neither version's answer: {got}")
                count[0] += 1
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(50):
            switch_alias(client, alias, collection_name(alias, a if i % 2 else b))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    print(f"\nserver: 50 alias switches, {count[0]} searches, {len(failures)} failed")
    assert failures == [] and count[0] > 0


def test_the_service_on_the_server(server, fake_index, fake, fake_embedder):
    from indexer.qdrant_store import publish
    from tests.conftest import make_client as make_test_client

    client, prefix = server
    alias = f"{prefix}-service"
    publish(client, fake, alias=alias)
    with make_test_client(fake_index, fake_embedder) as fc, \
            make_test_client(fake_index, fake_embedder, backend="qdrant", qdrant_url=URL, qdrant_alias=alias) as qc:
        assert qc.get("/readyz").json()["index_version"] == fake.version
        for q in ("Kata Containers", "OpenInfra Asia board members"):
            w = fc.get("/v1/search", params={"q": q, "k": 5}).json()["results"]
            g = qc.get("/v1/search", params={"q": q, "k": 5}).json()["results"]
            assert [r["chunk_id"] for r in g] == [r["chunk_id"] for r in w]
