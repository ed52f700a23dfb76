"""The same collection layout in qdrant-edge-py: Qdrant's Rust engine in this process, one shard (beta API).

Not a serving backend. It cross-checks the scoring that qdrant-client's local mode (pure Python) reproduces
with the real engine (tests/test_qdrant_edge.py), and it measures the single-shard engine cost of a query
(eval/bench_backends.py), which local mode cannot. `EdgeStore` has the same methods as `QdrantStore` (its
`query_scores` is the same QueryPlanner sending the same requests), so
`service.retrieval.Retriever(..., store=EdgeStore(...))` runs the service's retrieval on the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexer.qdrant_store import (
    DENSE,
    SENTENCES,
    SPARSE,
    QueryPlanner,
    sparse_documents,
    sparse_query,
    unpack_points,
)

BATCH = 512


def _edge():
    import qdrant_edge

    return qdrant_edge


def create_shard(path: Path, dim: int, mode: str = "global", exact: bool = True, threads: int | None = 1):
    """An empty shard at `path` with the backend's three vectors. `exact`: no HNSW (a plain index: every
    query scans, as FAISS Flat); else HNSW m=16, ef_construct=100 on the chunk vector."""
    e = _edge()
    hnsw = None if exact else e.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000)
    config = e.EdgeConfig(
        vectors={DENSE: e.EdgeVectorParams(size=dim, distance=e.Distance.Dot, hnsw_config=hnsw),
                 SENTENCES: e.EdgeVectorParams(size=dim, distance=e.Distance.Dot,
                                               multivector_config=e.MultiVectorConfig(e.MultiVectorComparator.MaxSim))},
        sparse_vectors={SPARSE: e.EdgeSparseVectorParams(modifier=e.Modifier.Idf if mode == "modifier" else None)},
        max_search_threads=threads,
        wal_enabled=False,
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    return e.EdgeShard.create(str(path), config)


def upsert(shard, dense: np.ndarray, sentences: Sequence[np.ndarray], sparse: Sequence[tuple] | None = None,
           payloads: Sequence[dict] | None = None) -> None:
    """Points 0..n-1: chunk vector, sentence vectors, BM25 terms (ids, values) and payload of each row."""
    e = _edge()
    n = len(dense)
    for a in range(0, n, BATCH):
        pts = []
        for i in range(a, min(n, a + BATCH)):
            vec = {DENSE: dense[i].tolist(), SENTENCES: np.asarray(sentences[i], dtype=np.float32).tolist()}
            if sparse is not None and len(sparse[i][0]):
                vec[SPARSE] = e.SparseVector(indices=[int(t) for t in sparse[i][0]],
                                             values=[float(v) for v in sparse[i][1]])
            pts.append(e.Point(i, vec, payloads[i] if payloads is not None else {"row": i}))
        shard.update(e.UpdateOperation.upsert_points(pts))
    shard.flush()


def shard_from_index(path: Path, index, mode: str = "global", exact: bool = True):
    """A shard holding an index version (indexer.store.IndexData), as `indexer.qdrant_store.publish` writes a
    collection."""
    from indexer.qdrant_store import _DenseRows
    from indexer.store import section_keys

    rows = _DenseRows(index.dense)
    dense = np.stack([rows[i] for i in range(index.dense.ntotal)]) if index.dense.ntotal else np.zeros((0, 0))
    counts = index.rows["sentence_counts"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    sv = index.sentence_vectors
    sentences = [sv[s : s + c] for s, c in zip(starts, counts, strict=True)]
    payloads = []
    for i in range(len(index.chunks)):
        c = index.chunks[i]
        payloads.append({"row": i, "chunk_id": c["chunk_id"], "doc_id": c["doc_id"],
                         "sections": sorted(section_keys(c))})
    shard = create_shard(path, int(dense.shape[1]), mode, exact)
    upsert(shard, dense, sentences, sparse_documents(index.lexical, mode), payloads)
    return shard


class EdgeStore(QueryPlanner):
    """VectorStore (+ the two scorers) over an EdgeShard; see QdrantStore for the meaning of each method."""

    def __init__(self, shard, dim: int, ntotal: int, vocab: dict[str, int] | None = None, exact: bool = True) -> None:
        e = _edge()
        self._e = e
        self.shard = shard
        self.dim = int(dim)
        self.ntotal = int(ntotal)
        self.vocab = vocab
        self._params = e.SearchParams(exact=exact)

    def _filter(self, allowed_rows):
        e = self._e
        if allowed_rows is None:
            return None
        rows = np.asarray(allowed_rows, dtype=np.int64)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == rows.size:
            return e.Filter(must=[e.FieldCondition(key="row", range=e.RangeFloat(gte=lo, lt=hi))])
        return e.Filter(must=[e.HasIdCondition(point_ids={int(r) for r in rows})])

    def search(self, query_vec: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        e = self._e
        if self.ntotal == 0 or k <= 0 or (allowed_rows is not None and len(allowed_rows) == 0):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1).tolist()
        res = self.shard.query(e.QueryRequest(limit=int(k), query=e.Query.Nearest(q, using=DENSE),
                                              filter=self._filter(allowed_rows), params=self._params,
                                              with_payload=False, with_vector=False))
        rows, scores = unpack_points(res)
        order = np.lexsort((rows, -scores))
        return rows[order], scores[order].astype(np.float32)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq = np.unique(rows)
        recs = self.shard.retrieve([int(r) for r in uniq], with_payload=False, with_vector=[DENSE])
        got = {int(r.id): r.vector[DENSE] for r in recs}
        table = np.asarray([got[int(r)] for r in uniq], dtype=np.float32)
        return table[np.searchsorted(uniq, rows)]

    def chunk_and_sentence_scores(self, rows: np.ndarray, query_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = self._e
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        uniq = np.unique(rows)
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1).tolist()
        flt = e.Filter(must=[e.HasIdCondition(point_ids={int(r) for r in uniq})])
        reqs = [e.QueryRequest(limit=int(uniq.size), query=e.Query.Nearest(q, using=DENSE), filter=flt,
                               params=self._params, with_payload=False),
                e.QueryRequest(limit=int(uniq.size), query=e.Query.Nearest([q], using=SENTENCES), filter=flt,
                               params=self._params, with_payload=False)]
        out = []
        for res in self.shard.query_batch(e.QueryBatchRequest(reqs)):
            r, s = unpack_points(res)
            order = np.argsort(r)
            out.append(s[order][np.searchsorted(uniq, rows)].astype(np.float32))
        return out[0], out[1]

    # -- the primitives of QueryPlanner (query_scores: the service's path, the same requests as QdrantStore)
    def _req(self, using: str, query, flt, limit: int, threshold: float | None = None):
        e = self._e
        return e.QueryRequest(limit=int(limit), query=e.Query.Nearest(query, using=using), filter=flt,
                              score_threshold=threshold, params=None if using == SPARSE else self._params,
                              with_payload=False, with_vector=False)

    def _run(self, req) -> tuple[np.ndarray, np.ndarray]:
        return unpack_points(self.shard.query(req))

    def _run_batch(self, reqs: list) -> list[tuple[np.ndarray, np.ndarray]]:
        return [unpack_points(r) for r in self.shard.query_batch(self._e.QueryBatchRequest(reqs))]

    def _ids(self, rows: np.ndarray):
        e = self._e
        return e.Filter(must=[e.HasIdCondition(point_ids={int(r) for r in rows})])

    def _sparse(self, ids: list[int], values: list[float]):
        return self._e.SparseVector(indices=[int(i) for i in ids], values=[float(v) for v in values])

    def bm25_scores(self, terms: Sequence[str], limit: int | None = None) -> np.ndarray:
        e = self._e
        out = np.zeros(self.ntotal, dtype=np.float32)
        ids, vals = sparse_query(self.vocab or {}, terms)
        if not ids:
            return out
        res = self.shard.query(e.QueryRequest(limit=int(limit or self.ntotal),
                                              query=e.Query.Nearest(e.SparseVector(indices=ids, values=vals),
                                                                    using=SPARSE),
                                              with_payload=False))
        rows, scores = unpack_points(res)
        out[rows] = scores
        return out
