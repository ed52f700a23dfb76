"""The dense vector store: one small interface, so that another engine can stand in for FAISS later without
touching retrieval or the API, and its FAISS implementation.

The index type follows the corpus size (chosen at build time, recorded in the manifest with its parameters
and the reason):

- below EXACT_MAX_ROWS chunks: `Flat` (IndexFlatIP), exact. A query scans every vector; at 50k × 384 that is
  about 2 ms on one core, and the ranking is exact and deterministic.
- from EXACT_MAX_ROWS up: `HNSW32,Flat` (a graph over the full-precision vectors), efConstruction 80,
  efSearch 256 by default. Search cost grows with log(n) rather than n; the vectors stay exact so that
  `fetch` and re-scoring are exact. `python -m bench.scale` measures its top-10 agreement with exact search.

Filtered search (`allowed_rows`): a filter that keeps at most EXACT_SCAN_MAX rows is scored exactly (a
gather of those rows and one matrix-vector product), so it always returns min(k, rows) results; a larger
one goes through FAISS with an IDSelector (IDSelectorRange for a contiguous run of rows, such as a
document, else IDSelectorBatch) and, for HNSW, an efSearch raised in proportion to how much the filter
leaves out.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

EXACT_MAX_ROWS = 50_000
EXACT_SCAN_MAX = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
MAX_EF_SEARCH = 2048
ADD_BLOCK = 65_536
SEARCH_THREADS = 1  # OpenMP threads of FAISS in a process that serves queries (see FaissStore)


def topk(scores: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k largest `scores`, best first; ties by `tiebreak` (ascending), else by position.

    argpartition picks the survivors (every score tied with the k-th is kept, so the tie-break is exact),
    then only those are sorted: O(n + m log m) for m survivors, never a sort of the whole array.
    """
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
        kth = scores[part].min()
        keep = np.flatnonzero(scores >= kth)  # the k best plus every score tied with the k-th
    else:
        keep = np.arange(n)
    keys = tiebreak[keep] if tiebreak is not None else keep
    order = np.lexsort((keys, -scores[keep]))
    return keep[order[:k]].astype(np.int64)


class VectorStore(Protocol):
    """Unit vectors addressed by row (row i = chunk i); inner product = cosine."""

    ntotal: int
    dim: int

    def search(self, query_vec: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k nearest rows, best first, among `allowed_rows` (sorted) when given."""

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows`, float32, one row each."""


def index_spec(n: int, dim: int) -> dict:
    """The FAISS index to build for `n` vectors: factory string, parameters, and why."""
    if n < EXACT_MAX_ROWS:
        return {"engine": "faiss", "factory": "Flat", "metric": "inner_product", "exact": True, "dim": dim,
                "reason": f"{n} vectors < {EXACT_MAX_ROWS}: an exact scan is fast enough and ranks exactly"}
    return {"engine": "faiss", "factory": f"HNSW{HNSW_M},Flat", "metric": "inner_product", "exact": False,
            "dim": dim, "M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH,
            "reason": f"{n} vectors >= {EXACT_MAX_ROWS}: an exact scan grows linearly; HNSW over full-precision "
                      "vectors keeps top-10 agreement with exact search >= 0.98 (bench-scale) at a fraction "
                      "of the cost, and needs no training"}


def build_dense_index(vectors: np.ndarray, spec: dict):
    """A FAISS index over `vectors` (unit float32 rows) as `spec` says."""
    import faiss

    dim = int(vectors.shape[1])
    index = faiss.index_factory(dim, spec["factory"], faiss.METRIC_INNER_PRODUCT)
    if "efConstruction" in spec:
        faiss.downcast_index(index).hnsw.efConstruction = int(spec["efConstruction"])
        faiss.downcast_index(index).hnsw.efSearch = int(spec["efSearch"])
    for a in range(0, len(vectors), ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[a : a + ADD_BLOCK], dtype=np.float32))
    return index


def flat_view(index) -> np.ndarray:
    """The full-precision vectors of a Flat or HNSW…,Flat index as a read-only numpy view (no copy)."""
    import faiss

    idx = faiss.downcast_index(index)
    storage = faiss.downcast_index(idx.storage) if hasattr(idx, "storage") and idx.storage is not None else idx
    if not isinstance(storage, faiss.IndexFlat):
        raise TypeError(f"{type(storage).__name__} does not keep full-precision vectors")
    n, d = storage.ntotal, storage.d
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    view = faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)
    view.flags.writeable = False
    return view


class FaissStore:
    """VectorStore over a FAISS Flat or HNSW…,Flat index (the index keeps the vectors `fetch` returns)."""

    def __init__(self, index, spec: dict | None = None, threads: int | None = SEARCH_THREADS) -> None:
        import faiss

        if threads:
            # one query at a time gains nothing from OpenMP threads, and on a busy machine their barriers cost
            # milliseconds (10k Flat, 2 shared cores: p50 16 ms with 2 threads, 0.4 ms with 1). Process-wide.
            faiss.omp_set_num_threads(threads)
        self._faiss = faiss
        self.index = index
        self.spec = spec or {}
        self.ntotal = int(index.ntotal)
        self.dim = int(index.d)
        self.vectors = flat_view(index)  # keeps `index` alive through self.index
        self.hnsw = isinstance(faiss.downcast_index(index), faiss.IndexHNSW)
        self.ef_search = int(self.spec.get("efSearch", HNSW_EF_SEARCH))
        self.exact = not self.hnsw

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, dtype=np.int64)]

    def _exact(self, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        vecs = self.vectors if rows is None else self.vectors[rows]
        scores = vecs @ q
        pos = topk(scores, k)
        out = pos if rows is None else rows[pos]
        return out.astype(np.int64), scores[pos]

    def search(self, query_vec: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(-1)
        if self.ntotal == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if allowed_rows is not None:
            allowed_rows = np.asarray(allowed_rows, dtype=np.int64)
            if allowed_rows.size == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            if allowed_rows.size <= max(EXACT_SCAN_MAX, k) or self.exact and allowed_rows.size <= 4 * EXACT_SCAN_MAX:
                return self._exact(q, k, allowed_rows)
        elif self.exact and self.ntotal <= k:
            return self._exact(q, k, None)
        k = min(k, self.ntotal if allowed_rows is None else int(allowed_rows.size))
        params = self._params(k, allowed_rows)
        scores, ids = self.index.search(q[None, :], k, params=params)
        ids, scores = ids[0], scores[0]
        ok = ids >= 0
        if allowed_rows is not None and ok.sum() < k:  # the graph walk ran out inside the filter: never fewer
            log.info("filtered HNSW search found %d of %d; exact scan of %d rows", ok.sum(), k, allowed_rows.size)
            return self._exact(q, k, allowed_rows)
        return ids[ok].astype(np.int64), scores[ok]

    def _params(self, k: int, allowed_rows: np.ndarray | None):
        faiss = self._faiss
        sel = None
        if allowed_rows is not None:
            lo, hi = int(allowed_rows[0]), int(allowed_rows[-1]) + 1
            if hi - lo == allowed_rows.size:  # a contiguous run (a document): no id list needed
                sel = faiss.IDSelectorRange(lo, hi)
            else:
                sel = faiss.IDSelectorBatch(allowed_rows)
        if self.hnsw:
            ef = max(self.ef_search, k)
            if allowed_rows is not None:  # the graph walk meets filtered-out nodes: widen it in proportion
                ef = min(MAX_EF_SEARCH, max(ef, int(ef * self.ntotal / allowed_rows.size)))
            params = faiss.SearchParametersHNSW(efSearch=ef)
        elif sel is not None:
            params = faiss.SearchParameters()
        else:
            return None
        if sel is not None:
            params.sel = sel
            params._sel_ref = sel  # the selector must outlive the call
        return params
