"""The vector-store contract (indexer.vectors.VectorStore), run against every backend: FAISS (Flat), Qdrant through
qdrant-client's local mode (the same client code that talks to a server) and Qdrant's Rust engine through
qdrant-edge-py (one shard in this process). Expected values come from numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N, DIM = 300, 24


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit_rows(N, DIM, 7)


def _faiss(vectors: np.ndarray, tmp: Path):
    from indexer.vectors import FaissStore, build_dense_index, index_spec

    return FaissStore(build_dense_index(vectors, index_spec(len(vectors), DIM)))


def upload_dense(client, name: str, vectors: np.ndarray, sentences: list[np.ndarray] | None = None) -> None:
    """A collection of the backend's layout from bare vectors: row i = point i, one sentence per chunk
    (its own vector) unless `sentences` are given, no BM25 terms."""
    from qdrant_client import models

    from indexer.qdrant_store import DENSE, SENTENCES, SPARSE, create_collection

    create_collection(client, name, int(vectors.shape[1]))
    points = [models.PointStruct(id=i, vector={DENSE: v.tolist(),
                                               SENTENCES: (sentences[i] if sentences else v[None, :]).tolist(),
                                               SPARSE: models.SparseVector(indices=[], values=[])},
                                 payload={"row": i, "doc_id": f"d{i // 100}", "sections": [f"s{i % 7}"]})
              for i, v in enumerate(vectors)]
    for a in range(0, len(points), 128):
        client.upsert(name, points=points[a : a + 128])


def _qdrant(vectors: np.ndarray, tmp: Path):
    from indexer.qdrant_store import QdrantStore, make_client

    client = make_client()
    upload_dense(client, "contract", vectors)
    return QdrantStore(client, "contract", DIM)


def _edge(vectors: np.ndarray, tmp: Path, sentences: list[np.ndarray] | None = None):
    from indexer.qdrant_edge import EdgeStore, create_shard, upsert

    shard = create_shard(tmp / "shard", DIM)
    upsert(shard, vectors, sentences or [v[None, :] for v in vectors],
           payloads=[{"row": i, "doc_id": f"d{i // 100}", "sections": [f"s{i % 7}"]} for i in range(len(vectors))])
    return EdgeStore(shard, DIM, len(vectors))


BACKENDS = {"faiss": _faiss, "qdrant-local": _qdrant, "qdrant-edge": _edge}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def store(request, vectors, tmp_path_factory):
    return BACKENDS[request.param](vectors, tmp_path_factory.mktemp(request.param))


def exact(vectors: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None):
    rows = np.arange(len(vectors)) if rows is None else rows
    s = vectors[rows] @ q
    order = np.lexsort((rows, -s))[:k]
    return rows[order], s[order]


def queries(n: int = 12) -> np.ndarray:
    return unit_rows(n, DIM, 11)


def test_size_and_dimension(store):
    assert (store.ntotal, store.dim) == (N, DIM)


@pytest.mark.parametrize("k", [1, 10, 50])
def test_search_is_the_exact_top_k_best_first(store, vectors, k):
    for q in queries():
        rows, scores = store.search(q, k)
        want_rows, want_scores = exact(vectors, q, k)
        assert rows.dtype.kind == "i" and len(rows) == k
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        assert (np.diff(scores) <= 1e-7).all()


@pytest.mark.parametrize("allowed", [
    np.arange(100, 200),  # a contiguous run of rows: a document
    np.array([3, 17, 42, 43, 44, 150, 151, 299]),  # scattered rows: a section
    np.array([5]),
])
def test_filtered_search_stays_inside_the_filter_and_is_exact(store, vectors, allowed):
    for q in queries():
        rows, scores = store.search(q, 5, allowed)
        want_rows, want_scores = exact(vectors, q, 5, allowed)
        assert set(rows.tolist()) <= set(allowed.tolist())
        assert rows.tolist() == want_rows.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_edges_empty_filter_zero_k_and_k_over_size(store, vectors):
    q = queries(1)[0]
    rows, scores = store.search(q, 5, np.zeros(0, np.int64))
    assert rows.size == 0 and scores.size == 0
    assert store.search(q, 0)[0].size == 0
    rows, _ = store.search(q, N + 50)
    assert sorted(rows.tolist()) == list(range(N))
    rows, _ = store.search(q, 10, np.array([8, 9]))
    assert sorted(rows.tolist()) == [8, 9]


def test_fetch_returns_the_vectors_of_the_rows_in_the_order_given(store, vectors):
    rows = np.array([299, 0, 17, 17, 150])
    got = store.fetch(rows)
    assert got.dtype == np.float32 and got.shape == (5, DIM)
    np.testing.assert_allclose(got, vectors[rows], atol=1e-7)
    assert store.fetch(np.zeros(0, np.int64)).shape[0] == 0


@pytest.mark.parametrize("backend", ["qdrant-local", "qdrant-edge"])
def test_qdrant_best_sentence_is_the_max_over_the_chunks_sentences(backend, tmp_path):
    """Multivector MAX_SIM with one query vector = the cosine of the chunk's best sentence."""
    from indexer.qdrant_store import QdrantStore, make_client

    vectors = unit_rows(40, DIM, 3)
    rng = np.random.default_rng(5)
    sentences = [unit_rows(int(rng.integers(1, 6)), DIM, 100 + i) for i in range(40)]
    if backend == "qdrant-edge":
        store = _edge(vectors, tmp_path, sentences)
    else:
        client = make_client()
        upload_dense(client, "multi", vectors, sentences)
        store = QdrantStore(client, "multi", DIM)
    rows = np.array([39, 2, 2, 17, 0])
    for q in queries(5):
        chunk, best = store.chunk_and_sentence_scores(rows, q)
        np.testing.assert_allclose(chunk, vectors[rows] @ q, atol=1e-5)
        np.testing.assert_allclose(best, [float((sentences[r] @ q).max()) for r in rows], atol=1e-5)


def test_qdrant_payload_filters_equal_row_filters():
    """Filtering by payload (doc_id, section key), as a client without the row arrays would, keeps the same
    rows as the row filters the retriever sends."""
    from indexer.qdrant_store import QdrantStore, make_client

    vectors = unit_rows(N, DIM, 9)
    client = make_client()
    upload_dense(client, "payload", vectors)
    store = QdrantStore(client, "payload", DIM)
    doc_rows = np.arange(100, 200)
    sec_rows = np.flatnonzero(np.arange(N) % 7 == 3)
    for q in queries(4):
        assert store.search_filtered(q, 7, doc_id="d1")[0].tolist() == store.search(q, 7, doc_rows)[0].tolist()
        assert store.search_filtered(q, 7, section="s3")[0].tolist() == store.search(q, 7, sec_rows)[0].tolist()
        both = np.intersect1d(doc_rows, sec_rows)
        assert (store.search_filtered(q, 7, doc_id="d1", section="s3")[0].tolist()
                == store.search(q, 7, both)[0].tolist())


@pytest.mark.parametrize("factory", ["Flat", "HNSW8,Flat", "IVF8,Flat"])
def test_qdrant_publishing_reads_the_vectors_of_every_faiss_index_type(factory):
    """A collection is written from the version's FAISS index, whatever its type (IVF keeps its vectors in
    inverted lists: they are reconstructed in blocks)."""
    import faiss

    from indexer.qdrant_store import _DenseRows

    vectors = unit_rows(5000, DIM, 21)
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    rows = _DenseRows(index)
    for i in (0, 1, 4095, 4096, 4999, 17, 4097):
        np.testing.assert_array_equal(rows[i], vectors[i])
