"""A cross-check with Qdrant's Rust engine (qdrant-edge-py, one shard in this process) on the same data as the
local-mode tests: what qdrant-client's local mode computes in Python, the engine computes the same way, and
both equal FAISS + bm25s. (Local mode is what the other tests run on; no Qdrant server can run here.)"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.lexical import lexical_scores
from indexer.qdrant_edge import EdgeStore, shard_from_index
from indexer.qdrant_store import QdrantStore, collection_name, make_client, publish
from indexer.store import load_index
from indexer.text import analyze
from tests.conftest import DOC_ID
from tests.test_qdrant_backend import _same_hits, report_questions


@pytest.fixture(scope="module")
def fake(fake_index):
    return load_index(fake_index)


@pytest.fixture(scope="module")
def stores(fake, tmp_path_factory):
    """{mode: (local-mode store, edge store)} for BM25 stored with global idf and with Modifier.IDF."""
    client = make_client()
    dim, vocab = int(fake.manifest["model"]["dim"]), fake.lexical.vocab_dict
    out = {}
    for mode in ("global", "modifier"):
        publish(client, fake, alias=mode, mode=mode)
        local = QdrantStore(client, collection_name(mode, fake.version), dim, vocab=vocab)
        shard = shard_from_index(tmp_path_factory.mktemp(f"edge-{mode}") / "shard", fake, mode)
        out[mode] = (local, EdgeStore(shard, dim, len(fake.chunks), vocab))
    yield out
    client.close()
    for _, edge in out.values():
        edge.shard.close()


@pytest.mark.parametrize("mode", ["global", "modifier"])
def test_engine_bm25_equals_local_mode_and_bm25s(fake, stores, mode):
    local, edge = stores[mode]
    bigrams = fake.manifest["lexical"]["bigrams"]
    for q in report_questions("dev") + ["Kata Containers Kata Containers"]:
        terms = analyze(q, bigrams)
        want = lexical_scores(fake.lexical, q, bigrams)
        got_edge, got_local = edge.bm25_scores(terms), local.bm25_scores(terms)
        np.testing.assert_allclose(got_edge, want, rtol=1e-5, atol=1e-5, err_msg=q)
        np.testing.assert_allclose(got_edge, got_local, rtol=1e-5, atol=1e-5, err_msg=q)


def test_engine_dense_and_best_sentence_equal_local_mode_and_numpy(fake, stores, fake_embedder):
    local, edge = stores["global"]
    rows = np.arange(len(fake.chunks))
    counts = fake.rows["sentence_counts"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sv = np.asarray(fake.sentence_vectors)
    for q in report_questions("test")[:20]:
        v = np.asarray(fake_embedder.encode([q])[0], dtype=np.float32)
        chunk_e, best_e = edge.chunk_and_sentence_scores(rows, v)
        chunk_l, best_l = local.chunk_and_sentence_scores(rows, v)
        want_best = np.array([float((sv[s : s + c] @ v).max()) for s, c in zip(starts, counts, strict=True)])
        np.testing.assert_allclose(chunk_e, edge.fetch(rows) @ v, atol=1e-5)
        np.testing.assert_allclose(chunk_e, chunk_l, atol=1e-5)
        np.testing.assert_allclose(best_e, want_best, atol=1e-5)
        np.testing.assert_allclose(best_e, best_l, atol=1e-5)
        r_e, s_e = edge.search(v, 10, np.arange(5, 25))
        r_l, s_l = local.search(v, 10, np.arange(5, 25))
        np.testing.assert_allclose(s_e, s_l, atol=1e-5)
        assert set(r_e.tolist()) <= set(range(5, 25))


@pytest.mark.parametrize("pool,candidates,margin", [(256, 50, 32), (8, 50, 32), (8, 5, 1)])
def test_retrieval_on_the_engine_equals_faiss(fake, stores, fake_embedder, monkeypatch, pool, candidates, margin):
    """The service's path (query_scores: at most two batches) on the engine; 5 fusion candidates and a BM25
    margin of 1 make the BM25 top shorter than the chunks matching."""
    from dataclasses import replace

    import service.retrieval as retrieval

    monkeypatch.setattr(retrieval, "DENSE_POOL", pool)
    edge = stores["global"][1]
    monkeypatch.setattr(edge, "LEXICAL_MARGIN", margin)
    fusion = replace(retrieval.FusionConfig(), candidates=candidates)
    faiss_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion)
    edge_r = retrieval.Retriever(fake, fake_embedder, fusion=fusion, store=edge)
    compared = 0
    for q in report_questions("test")[:30]:
        for mode in ("hybrid", "dense", "lexical"):
            for f in ({}, {"doc_id": DOC_ID}, {"section": "OpenInfra Asia"}):
                a = faiss_r.search(q, k=10, mode=mode, **f)
                _same_hits(a, edge_r.search(q, k=10, mode=mode, **f), f"{q} {mode} {f}")
                compared += len(a)
    assert compared > 1000


def test_engine_bm25_top_whose_ties_run_past_the_limit_is_fetched_whole(tmp_path):
    """As the local-mode test: 10 points score 2.0, 20 tie at 1.0; the top 15 with a margin of 2 ends inside
    the ties, and the engine's score threshold brings every tied point back."""
    from indexer.qdrant_edge import create_shard, upsert

    dim = 8
    v = np.random.default_rng(3).standard_normal((35, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    weights = [2.0] * 10 + [1.0] * 20 + [0.0] * 5
    shard = create_shard(tmp_path / "shard", dim)
    upsert(shard, v, [x[None, :] for x in v],
           [(np.array([0 if w else 1]), np.array([w or 1.0])) for w in weights])
    try:
        store = EdgeStore(shard, dim, 35, vocab={"a": 0, "b": 1})
        store.LEXICAL_MARGIN = 2
        r = store.query_scores(None, ["a"], None, pool=4, lexical_top=15)
        np.testing.assert_array_equal(r.lex, np.asarray(weights, np.float32))
        assert store.tie_extensions == 1
        r = store.query_scores(v[34], ["a"], np.arange(12, 35), pool=4, lexical_top=5)
        np.testing.assert_array_equal(r.lex[12:30], 1.0)
        assert set(range(12, 30)) <= set(r.rows.tolist()) and store.tie_extensions == 2
    finally:
        shard.close()
