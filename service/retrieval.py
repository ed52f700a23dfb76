"""Retrieval over a loaded index: dense (cosine), lexical (BM25) and their fusion. No HTTP here.

Dense candidates come from the vector store (indexer.vectors: exact Flat for small corpora, HNSW or IVF for large
ones); only the candidates' sentences are re-scored (sentence vectors are memory-mapped). Lexical candidates
come from BM25 (bm25s, memory-mapped); a lexical-only candidate gets its dense score from vectors fetched by
row. Every ranking goes through one `topk` (argpartition, then a sort of the survivors; ties by chunk id),
filters use row ranges and row arrays computed at build time, and chunk records are read for the k results
only. When the filtered corpus holds at most DENSE_POOL chunks every chunk is a candidate, so the ranking
is exactly that of scoring every chunk (the report's 39 chunks).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from indexer.embed import Embedder
from indexer.lexical import lexical_scores
from indexer.store import IndexData
from indexer.text import analyze
from indexer.vectors import FaissStore, VectorStore, topk

MODES = ("hybrid", "dense", "lexical")
DENSE_POOL = 256  # chunk-level nearest neighbours re-scored with their best sentence
FULL_SENTENCE_SCORES_MAX = 200_000  # sentence_scores() returns a full array up to this many sentences


class UnknownFilter(ValueError):
    """A filter names a document or section that the index does not hold."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class QueryTooLong(ValueError):
    """A query longer than the model reads (it would be truncated silently): refused, never cut."""

    def __init__(self, pieces: int, limit: int) -> None:
        super().__init__(f"is {pieces} word pieces long; the embedding model reads at most {limit} (special "
                         "tokens included) and the service never truncates a query. Shorten it.")
        self.pieces, self.limit = pieces, limit


ALPHA_PLAIN = 0.5  # hybrid's dense weight chosen on report dev with the plain model
ALPHA_ADAPTED = 0.8  # …chosen on dev + report-external with the query adapter (README, *Query adapter*)


def default_alpha(embedder) -> float:
    """Hybrid's dense weight for questions encoded by `embedder`: higher when a query adapter makes the dense side
    stronger (with the plain model 0.7 is worse than 0.5: report-external hit@1 0.781 against 0.836)."""
    return ALPHA_ADAPTED if getattr(embedder, "query_adapter", None) else ALPHA_PLAIN


@dataclass(frozen=True)
class FusionConfig:
    """How hybrid mode combines the two retrievers (chosen on the tuning sets, see README; alpha: default_alpha)."""

    method: str = "minmax"  # "minmax" (convex combination of min-max normalized scores) | "rrf"
    sentence_weight: float = 0.5  # dense score = (1-w)·cos(chunk) + w·max cos(sentence of the chunk)
    alpha: float = 0.8  # weight of the dense score (minmax): ALPHA_ADAPTED, see default_alpha
    candidates: int = 50  # top-N of each retriever that enter the fusion
    # hybrid: a passage sharing no term with the query must be at least this close in meaning to be returned
    # (min-max normalization would otherwise lift unrelated passages when only one passage matches at all)
    min_dense_without_terms: float = 0.2
    rrf_k: int = 60


@dataclass
class Hit:
    index: int  # row of the chunk in the index
    chunk: dict
    score: float
    dense: float | None  # None in lexical mode (the query is not embedded)
    lexical: float


@dataclass
class Retrieval:
    """A search's hits, with the BM25 scores it read (every chunk's, or a store's top: see `lexical_max`)."""

    hits: list[Hit]
    lex: np.ndarray  # BM25 by row (rows the search did not read are 0)
    allowed: np.ndarray | None  # the rows the filters kept (None: every row)

    @property
    def lexical_max(self) -> float:
        """The highest BM25 score among the allowed chunks: exact in hybrid and lexical modes (a store that
        scores in few requests returns the BM25 top); in dense mode through such a store, of its pool only."""
        scope = self.lex if self.allowed is None else self.lex[self.allowed]
        return float(scope.max()) if scope.size else 0.0


class QueryCache:
    """A small thread-safe LRU of query vectors: a search box sends the same prefixes again and again."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def put(self, key: str, value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def _minmax(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-9:
        return np.ones_like(x) if hi > 0 else np.zeros_like(x)
    return (x - lo) / (hi - lo)


class LazySentenceScores:
    """What `Retriever.sentence_scores` returns for a large index: indexable like the full array
    (`scores[sentence_starts[row] + i]`), each sentence scored when first asked for."""

    def __init__(self, vectors: np.ndarray, query_vec: np.ndarray) -> None:
        self._v = vectors
        self._q = query_vec
        self._memo: dict[int, np.float32] = {}

    def __len__(self) -> int:
        return int(self._v.shape[0])

    def __getitem__(self, i: int) -> np.float32:
        i = int(i)
        s = self._memo.get(i)
        if s is None:
            s = self._memo[i] = np.float32(np.asarray(self._v[i]) @ self._q)
        return s


class Retriever:
    def __init__(self, index: IndexData, embedder: Embedder, fusion: FusionConfig | None = None,
                 cache_size: int = 2048, store: VectorStore | None = None) -> None:
        self.index = index
        self.embedder = embedder
        self.fusion = fusion or FusionConfig(alpha=default_alpha(embedder))  # the default for this query encoder
        self.chunks = index.chunks  # a sequence of chunk dicts, parsed on access
        self.store: VectorStore = store or FaissStore(index.dense, index.manifest.get("dense"),
                                                        vectors=index.chunk_vectors)
        rows = index.rows
        self.ids = rows["chunk_ids"]  # bytes, for ties
        counts = rows["sentence_counts"].astype(np.int64)
        self.sentence_counts = counts
        self.sentence_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) \
            else counts
        self.sentence_vectors = index.sentence_vectors  # memory-mapped
        cat = index.catalog
        self.doc_rows: dict[str, tuple[int, int]] = {d: (int(a), int(b)) for d, (a, b) in cat["documents"].items()}
        self.doc_ids = set(self.doc_rows)
        self._section_pos = {k: i for i, k in enumerate(cat["sections"])}
        self._section_rows = rows["section_rows"]
        self._section_offsets = rows["section_offsets"]
        self._cache = QueryCache(cache_size)
        self.bigrams = bool(index.manifest.get("lexical", {}).get("bigrams", False))
        self.doc_freq: dict[str, int] = cat["doc_freq"]  # stem -> chunks holding it (computed at build time)
        # stems in more than 40% of the chunks are never highlighted on their own merit
        self.common_terms = frozenset(cat["common_terms"])

    def clear_cache(self) -> None:
        self._cache = QueryCache(self._cache.size)

    # -- pieces -------------------------------------------------------------------------------------
    def check_query_length(self, query: str) -> None:
        """Raise QueryTooLong when the model would cut `query` (more word pieces than it reads)."""
        pieces = self.embedder.count_pieces(" ".join(query.split()))
        if pieces > self.embedder.max_pieces:
            raise QueryTooLong(pieces, self.embedder.max_pieces)

    def encode_query(self, query: str) -> np.ndarray:
        key = " ".join(query.split())
        v = self._cache.get(key)
        if v is None:
            self.check_query_length(key)
            v = self.embedder.encode([key])[0]
            self._cache.put(key, v)
        return v

    def allowed_rows(self, doc_id: str | None = None, section: str | None = None) -> np.ndarray | None:
        """The sorted rows a filter keeps (None: no filter). Unknown values raise UnknownFilter."""
        if not doc_id and not section:
            return None
        rows: np.ndarray | None = None
        if section:
            s = section.strip().lower().lstrip("#")
            pos = self._section_pos.get(s)
            if pos is None:
                raise UnknownFilter(
                    "section", f"unknown section {section!r}: give a heading (any level of heading_path) or an anchor"
                )
            rows = self._section_rows[self._section_offsets[pos] : self._section_offsets[pos + 1]].astype(np.int64)
        if doc_id:
            span = self.doc_rows.get(doc_id)
            if span is None:
                raise UnknownFilter("doc_id", f"unknown doc_id {doc_id!r}; GET /v1/index lists the documents")
            a, b = span
            if rows is None:
                rows = np.arange(a, b, dtype=np.int64)
            else:
                rows = rows[np.searchsorted(rows, a) : np.searchsorted(rows, b)]
        return rows

    def _sentence_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sentence rows of the chunks `rows`, in order; where each chunk's sentences begin in that list)."""
        counts = self.sentence_counts[rows]
        off = np.cumsum(counts) - counts
        idx = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(off, counts) + np.repeat(
            self.sentence_starts[rows], counts)
        return idx, off

    def sentence_scores_for(self, rows, query_vec: np.ndarray) -> dict[int, np.ndarray]:
        """Cosine of the query with each sentence of the chunks `rows`: {row: scores in sentence order}."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return {}
        idx, off = self._sentence_rows(rows)
        scores = np.asarray(self.sentence_vectors[idx]) @ query_vec.astype(np.float32)
        return {int(r): scores[o : o + int(c)] for r, o, c in zip(rows, off, self.sentence_counts[rows], strict=True)}

    def sentence_scores(self, query_vec: np.ndarray):
        """Cosine of the query with every sentence of every chunk, in chunk order (index it with
        `sentence_starts[row] + i`). Above FULL_SENTENCE_SCORES_MAX sentences a lazy equivalent that scores
        a sentence when it is read; prefer sentence_scores_for(rows, query_vec)."""
        q = query_vec.astype(np.float32)
        if self.sentence_vectors.shape[0] <= FULL_SENTENCE_SCORES_MAX:
            return np.asarray(self.sentence_vectors) @ q
        return LazySentenceScores(self.sentence_vectors, q)

    def dense_scores_for(self, rows: np.ndarray, query_vec: np.ndarray) -> np.ndarray:
        """Chunk-level cosine blended with the best sentence of the chunk (multi-vector), for `rows`."""
        q = query_vec.astype(np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        store_scores = getattr(self.store, "chunk_and_sentence_scores", None)  # a store that scores itself (Qdrant)
        if store_scores is not None and len(rows):
            return self._blend(*store_scores(rows, q))
        chunk = self.store.fetch(rows) @ q
        w = self.fusion.sentence_weight
        if w <= 0 or not len(chunk):
            return chunk
        idx, off = self._sentence_rows(rows)
        best = np.maximum.reduceat(np.asarray(self.sentence_vectors[idx]) @ q, off)
        return (1 - w) * chunk + w * best

    def _blend(self, chunk: np.ndarray, best: np.ndarray) -> np.ndarray:
        w = self.fusion.sentence_weight
        return chunk if w <= 0 else (1 - w) * chunk + w * best

    def _store_query(self, query: str, mode: str, k: int, allowed: np.ndarray | None,
                     query_vec: np.ndarray | None, lexical: np.ndarray | None):
        """A store that scores a whole query in few requests (Qdrant: `query_scores`): its QueryScores, else None."""
        hook = getattr(self.store, "query_scores", None)
        if hook is None:
            return None
        q = None if mode == "lexical" else (query_vec if query_vec is not None else self.encode_query(query))
        top = k if mode == "lexical" else self.fusion.candidates if mode == "hybrid" else 0
        terms = analyze(query, self.bigrams) if lexical is None else None
        return hook(q, terms, allowed, pool=DENSE_POOL, lexical_top=top, lexical=lexical)

    def lexical_scores(self, query: str) -> np.ndarray:
        store_bm25 = getattr(self.store, "bm25_scores", None)  # BM25 as the store's sparse vectors (Qdrant)
        if store_bm25 is not None:
            return store_bm25(analyze(query, self.bigrams))
        s = lexical_scores(self.index.lexical, query, self.bigrams)
        return s if s.size else np.zeros(len(self.chunks), dtype=np.float32)

    def _dense_pool(self, q: np.ndarray, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, blended dense scores) of the dense candidates: every allowed chunk when there are at most
        DENSE_POOL of them (exact), else the store's DENSE_POOL nearest by chunk vector."""
        n_allowed = self.store.ntotal if allowed is None else int(allowed.size)
        if n_allowed <= DENSE_POOL:
            rows = np.arange(self.store.ntotal, dtype=np.int64) if allowed is None else allowed
        else:
            rows, _ = self.store.search(q, DENSE_POOL, allowed)
            rows = np.sort(rows)
        return rows, self.dense_scores_for(rows, q)

    # -- search -------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, mode: str = "hybrid", doc_id: str | None = None,
               section: str | None = None, query_vec: np.ndarray | None = None,
               lexical: np.ndarray | None = None) -> list[Hit]:
        """The k best chunks. `query_vec` and `lexical` (BM25 scores) may be passed when already computed."""
        return self.retrieve(query, k, mode, doc_id, section, query_vec, lexical).hits

    def retrieve(self, query: str, k: int = 10, mode: str = "hybrid", doc_id: str | None = None,
                 section: str | None = None, query_vec: np.ndarray | None = None,
                 lexical: np.ndarray | None = None) -> Retrieval:
        """`search`, with the highest BM25 score among the allowed chunks (what /v1/ask's `lexical_top` reads),
        taken from the scores the search itself read: a store that scores a query in few requests (Qdrant)
        returns the BM25 top, not every chunk's score."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        allowed = self.allowed_rows(doc_id, section)
        pre = self._store_query(query, mode, k, allowed, query_vec, lexical)
        lex = pre.lex if pre is not None else lexical if lexical is not None else self.lexical_scores(query)
        if mode == "lexical":
            rows = np.flatnonzero(lex > 0) if allowed is None else allowed[lex[allowed] > 0]
            top = rows[topk(lex[rows].astype(np.float64), k, self.ids[rows])]
            dense = None if query_vec is None else self.dense_scores_for(top, query_vec)
            return Retrieval([Hit(int(i), self.chunks[int(i)], float(lex[i]),
                                  None if dense is None else float(dense[j]), float(lex[i]))
                              for j, i in enumerate(top)], lex, allowed)
        q = query_vec if query_vec is not None else self.encode_query(query)
        pool, pool_dense = (pre.pool, self._blend(*pre.dense(pre.pool))) if pre is not None \
            else self._dense_pool(q, allowed)
        if mode == "dense":
            pos = topk(pool_dense.astype(np.float64), k, self.ids[pool])
            return Retrieval([Hit(int(pool[p]), self.chunks[int(pool[p])], float(pool_dense[p]),
                                  float(pool_dense[p]), float(lex[pool[p]])) for p in pos], lex, allowed)
        cand, fused, dense = self._fuse(q, pool, pool_dense, lex, allowed, pre)
        keep = (lex[cand] > 0) | (dense >= self.fusion.min_dense_without_terms)
        cand, fused, dense = cand[keep], fused[keep], dense[keep]
        pos = topk(fused, k, self.ids[cand])
        return Retrieval([Hit(int(cand[p]), self.chunks[int(cand[p])], float(fused[p]), float(dense[p]),
                              float(lex[cand[p]])) for p in pos], lex, allowed)

    def _fuse(self, q: np.ndarray, pool: np.ndarray, pool_dense: np.ndarray, lex: np.ndarray,
              allowed: np.ndarray | None, pre=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(candidate rows, fused scores, dense scores): the union of each retriever's top `candidates`."""
        f = self.fusion
        n = f.candidates
        top_d = pool[topk(pool_dense, n)]  # ties by row, as a stable sort would
        lex_pos = np.flatnonzero(lex > 0) if allowed is None else allowed[lex[allowed] > 0]
        top_l = lex_pos[topk(lex[lex_pos], n)]
        cand = np.union1d(top_d, top_l)
        if cand.size == 0:
            return cand, np.zeros(0), np.zeros(0, np.float32)
        dense = np.empty(cand.size, dtype=pool_dense.dtype)
        at = np.searchsorted(pool, cand)
        at_ok = np.minimum(at, max(0, pool.size - 1))
        in_pool = (pool.size > 0) & (pool[at_ok] == cand) if pool.size else np.zeros(cand.size, bool)
        dense[in_pool] = pool_dense[at_ok[in_pool]]
        if (~in_pool).any():  # lexical-only candidates: their vectors fetched by row
            dense[~in_pool] = self._blend(*pre.dense(cand[~in_pool])) if pre is not None \
                else self.dense_scores_for(cand[~in_pool], q)
        if f.method == "rrf":
            rank_d = {int(i): r for r, i in enumerate(top_d)}
            rank_l = {int(i): r for r, i in enumerate(top_l)}
            fused = np.array([(1.0 / (f.rrf_k + rank_d[int(i)] + 1) if int(i) in rank_d else 0.0)
                              + (1.0 / (f.rrf_k + rank_l[int(i)] + 1) if int(i) in rank_l else 0.0)
                              for i in cand])
            return cand, fused, dense
        d = _minmax(dense.astype(np.float64))
        lx = lex[cand].astype(np.float64)
        l_norm = _minmax(lx) if lx.max() > 0 else np.zeros_like(lx)
        return cand, f.alpha * d + (1 - f.alpha) * l_norm, dense
