"""The dense vector store: one small interface, so that another engine can stand in for FAISS later without
touching retrieval or the API, and its FAISS implementation.

The index type follows the corpus size (chosen at build time, recorded in the manifest with its parameters
and the reason):

- below EXACT_MAX_ROWS chunks: `Flat` (IndexFlatIP), exact. A query scans every vector; at 50k × 384 that is
  about 2 ms on one core, and the ranking is exact and deterministic.
- from EXACT_MAX_ROWS to IVF_MIN_ROWS: `HNSW32,Flat` (a graph over the full-precision vectors),
  efConstruction 80, efSearch 256 by default. Search cost grows with log(n) rather than n; the vectors stay
  exact so that `fetch` and re-scoring are exact; no training step.
- from IVF_MIN_ROWS up: `IVF<nlist>,SQ8` (nlist a power of two near 4·√n, k-means trained on a sample of
  IVF_TRAIN_PER_LIST points a list; vectors in the lists as 8-bit scalar-quantized codes; nprobe IVF_NPROBE).
  Building an HNSW graph over a million 384-d vectors takes longer than the build budget on two cores (its
  insertions are not linear in n); IVF's build is a k-means on a sample plus one assignment pass, linear in
  n. Scanning a probed list is bound by memory bandwidth, so 8-bit codes (a quarter of float32) scan four
  times as many vectors in the same time; the store's scores only choose the retriever's candidate pool,
  which is re-scored exactly from float32 vectors. An IVF index keeps no vectors by row, so the build also
  writes the chunk vectors row by row (`chunk_vectors.npy`, memory-mapped at load) for `fetch` and exact
  scans.

Filtered search (`allowed_rows`): a filter that keeps at most EXACT_SCAN_MAX rows is scored exactly (a
gather of those rows and one matrix-vector product), so it always returns min(k, rows) results; a larger
one goes through FAISS with an IDSelector (IDSelectorRange for a contiguous run of rows, such as a
document, else IDSelectorBatch) and, for HNSW (efSearch) or IVF (nprobe), a search widened in proportion to
how much the filter leaves out; if that still finds fewer than k, the filtered rows are scanned exactly.
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
IVF_MIN_ROWS = 300_000
IVF_NPROBE = 1024  # of 4,096 lists at 1M: bench-scale sweep (store recall@10 0.97 at 512, 0.982 at 1024)
IVF_TRAIN_PER_LIST = 40  # k-means sample: this many points a list (FAISS warns below 39)
IVF_TRAIN_ITERATIONS = 12
SENTENCE_FP16_MIN_ROWS = EXACT_MAX_ROWS  # from this many chunks, sentence vectors are stored as float16
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


def sentence_dtype(n_chunks: int) -> str:
    """How sentence vectors are stored for a corpus of `n_chunks`: float32 (exact; the report, SciFact)
    below SENTENCE_FP16_MIN_ROWS, else float16 (half the disk and page cache; a cosine moves by < 1e-3,
    measured by bench-scale as top-10 agreement with an exact float32 retriever)."""
    return "float32" if n_chunks < SENTENCE_FP16_MIN_ROWS else "float16"


def _ivf_lists(n: int) -> int:
    """A power of two near 4·√n (4,096 lists at a million), and never fewer than 39 training points a list."""
    nlist = int(2 ** round(np.log2(max(2.0, 4 * np.sqrt(n)))))
    return max(1, min(nlist, n // 39))


def index_spec(n: int, dim: int) -> dict:
    """The FAISS index to build for `n` vectors: factory string, parameters, and why."""
    if n < EXACT_MAX_ROWS:
        return {"engine": "faiss", "factory": "Flat", "metric": "inner_product", "exact": True, "dim": dim,
                "reason": f"{n} vectors < {EXACT_MAX_ROWS}: an exact scan is fast enough and ranks exactly"}
    if n >= IVF_MIN_ROWS:
        nlist = _ivf_lists(n)
        return {"engine": "faiss", "factory": f"IVF{nlist},SQ8", "metric": "inner_product", "exact": False,
                "dim": dim, "nlist": nlist, "nprobe": min(nlist, IVF_NPROBE),
                "train_points": min(n, IVF_TRAIN_PER_LIST * nlist), "train_iterations": IVF_TRAIN_ITERATIONS,
                "row_vectors": "chunk_vectors.npy",
                "reason": f"{n} vectors >= {IVF_MIN_ROWS}: an HNSW graph over this many takes longer to build "
                          "than the build budget on two cores; IVF trains k-means on a sample and assigns every "
                          "vector once (linear in n); 8-bit codes scan 4x faster than float32 (the candidates "
                          f"are re-scored exactly); nprobe {min(nlist, IVF_NPROBE)} of {nlist} lists keeps the "
                          "exact top 10 in the candidate pool (bench-scale sweep)"}
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
    if "nlist" in spec:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(spec["nprobe"])
        ivf.cp.niter = int(spec.get("train_iterations", IVF_TRAIN_ITERATIONS))
        ivf.cp.seed = 1234
        take = int(spec.get("train_points", len(vectors)))
        rows = np.sort(np.random.default_rng(1234).choice(len(vectors), size=min(take, len(vectors)),
                                                          replace=False))
        ivf.cp.max_points_per_centroid = max(1, -(-len(rows) // int(spec["nlist"])))  # no resampling by FAISS
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
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


def keeps_row_vectors(index) -> bool:
    """True when the index holds its vectors by row (Flat, HNSW…,Flat): `flat_view` works, no
    chunk_vectors.npy is needed."""
    import faiss

    idx = faiss.downcast_index(index)
    storage = faiss.downcast_index(idx.storage) if hasattr(idx, "storage") and idx.storage is not None else idx
    return isinstance(storage, faiss.IndexFlat)


class FaissStore:
    """VectorStore over a FAISS index: Flat or HNSW…,Flat (the index keeps the vectors `fetch` returns), or
    IVF…,Flat with the row-ordered vectors given as `vectors` (chunk_vectors.npy, memory-mapped)."""

    def __init__(self, index, spec: dict | None = None, threads: int | None = SEARCH_THREADS,
                 vectors: np.ndarray | None = None) -> None:
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
        # Flat / HNSW: a view of the index's own storage (kept alive through self.index)
        self.vectors = flat_view(index) if vectors is None else vectors
        if self.vectors.shape != (self.ntotal, self.dim):
            raise ValueError(f"{self.vectors.shape} row vectors for an index of {self.ntotal} × {self.dim}")
        self.hnsw = isinstance(faiss.downcast_index(index), faiss.IndexHNSW)
        self.ivf = faiss.try_extract_index_ivf(index) is not None
        self.ef_search = int(self.spec.get("efSearch", HNSW_EF_SEARCH))
        self.nprobe = int(self.spec.get("nprobe", IVF_NPROBE))
        self.nlist = int(faiss.extract_index_ivf(index).nlist) if self.ivf else 0
        self.code_size = int(faiss.extract_index_ivf(index).code_size) if self.ivf else 4 * self.dim
        self.exact = not (self.hnsw or self.ivf)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[np.asarray(rows, dtype=np.int64)]

    def _exact(self, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if rows is None:
            vecs = self.vectors
        elif rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:  # a run of rows: a view, no gather
            vecs = self.vectors[int(rows[0]) : int(rows[-1]) + 1]
        else:
            vecs = self.vectors[rows]
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
            if self.ivf:  # the probe widened for this filter would read more bytes than an exact scan of it
                probe = min(self.nlist, max(self.nprobe, self.nprobe * self.ntotal // allowed_rows.size))
                scanned_bytes = self.ntotal * probe // self.nlist * self.code_size
                if allowed_rows.size * 4 * self.dim <= scanned_bytes:
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
        elif self.ivf:
            nprobe = self.nprobe
            if allowed_rows is not None:  # fewer allowed rows in each list: probe more lists in proportion
                nprobe = max(nprobe, int(nprobe * self.ntotal / allowed_rows.size))
            params = faiss.SearchParametersIVF(nprobe=min(self.nlist, nprobe))
        elif sel is not None:
            params = faiss.SearchParameters()
        else:
            return None
        if sel is not None:
            params.sel = sel
            params._sel_ref = sel  # the selector must outlive the call
        return params
