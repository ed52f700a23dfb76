"""Retrieval over a loaded index: dense (cosine), lexical (BM25) and their fusion. No HTTP here.

Scoring is exhaustive (every chunk is scored), which is exact and takes well under a millisecond for
corpora of tens of thousands of chunks.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np

from indexer.embed import Embedder
from indexer.lexical import lexical_scores
from indexer.store import IndexData
from indexer.text import STOPWORDS, stem, token_spans

MODES = ("hybrid", "dense", "lexical")


class UnknownFilter(ValueError):
    """A filter names a document or section that the index does not hold."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class QueryTooLong(ValueError):
    """A query longer than the model reads (it would be truncated silently): refused, never cut."""

    def __init__(self, pieces: int, limit: int) -> None:
        super().__init__(f"is {pieces} word pieces long; the embedding model reads at most {limit} (special "
                         "tokens included) and the service never truncates a query. Shorten it, or use "
                         "mode=lexical, which does not embed the query.")
        self.pieces, self.limit = pieces, limit


@dataclass(frozen=True)
class FusionConfig:
    """How hybrid mode combines the two retrievers (chosen on the eval dev split, see README)."""

    method: str = "minmax"  # "minmax" (convex combination of min-max normalized scores) | "rrf"
    sentence_weight: float = 0.5  # dense score = (1-w)·cos(chunk) + w·max cos(sentence of the chunk)
    alpha: float = 0.5  # weight of the dense score (minmax)
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


def highlight_spans(text: str, query: str, common: frozenset[str] = frozenset()) -> list[list[int]]:
    """Character spans of `text` whose words match a query word (same stem, stop words ignored).

    Words in `common` (in most passages of the corpus, like the report's own name) are not marked
    unless the query has nothing else, so that the marks point at what distinguishes a passage.
    """
    wanted = {stem(t) for _, _, t in token_spans(query) if t not in STOPWORDS}
    if wanted - common:
        wanted -= common
    if not wanted:
        return []
    spans: list[list[int]] = []
    for a, b, t in token_spans(text):
        if t in STOPWORDS or stem(t) not in wanted:
            continue
        if spans and not text[spans[-1][1] : a].strip():  # "CFN working group" is one highlight
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return spans


def document_frequencies(chunks: list[dict]) -> Counter[str]:
    """In how many chunks (heading path included) each stem occurs; stop words left out."""
    df: Counter[str] = Counter()
    for c in chunks:
        df.update({stem(t) for _, _, t in token_spans(c["embed_text"]) if t not in STOPWORDS})
    return df


class Retriever:
    def __init__(self, index: IndexData, embedder: Embedder, fusion: FusionConfig | None = None,
                 cache_size: int = 2048) -> None:
        self.index = index
        self.embedder = embedder
        self.fusion = fusion or FusionConfig()
        self.chunks = index.chunks
        n = index.dense.ntotal
        self.vectors = index.dense.reconstruct_n(0, n) if n else np.zeros((0, embedder.dim), np.float32)
        self.ids = np.array([c["chunk_id"] for c in self.chunks])
        self.sentence_vectors = index.sentence_vectors
        counts = np.array([len(c["sentences"]) for c in self.chunks], dtype=np.int64)
        self.sentence_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
        self.doc_ids = {c["doc_id"] for c in self.chunks}
        self._cache = QueryCache(cache_size)
        self.bigrams = bool(index.manifest.get("lexical", {}).get("bigrams", False))
        self.doc_freq = document_frequencies(self.chunks)
        # stems in more than 40% of the chunks are never highlighted on their own merit
        limit = max(2, 0.4 * len(self.chunks))
        self.common_terms = frozenset(t for t, n in self.doc_freq.items() if n > limit)

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

    def filter_mask(self, doc_id: str | None = None, section: str | None = None) -> np.ndarray | None:
        """Boolean mask of the chunks a filter keeps (None: no filter). Unknown values raise UnknownFilter."""
        if not doc_id and not section:
            return None
        mask = np.ones(len(self.chunks), dtype=bool)
        if doc_id:
            if doc_id not in self.doc_ids:
                raise UnknownFilter("doc_id", f"unknown doc_id {doc_id!r}; GET /v1/index lists the documents")
            mask &= np.array([c["doc_id"] == doc_id for c in self.chunks])
        if section:
            s = section.strip().lower().lstrip("#")
            sec = np.array(
                [s == c["anchor"] or any(s == h.lower() for h in c["heading_path"]) for c in self.chunks]
            )
            if not sec.any():
                raise UnknownFilter(
                    "section", f"unknown section {section!r}: give a heading (any level of heading_path) or an anchor"
                )
            mask &= sec
        return mask

    def sentence_scores(self, query_vec: np.ndarray) -> np.ndarray:
        """Cosine of the query with every sentence of every chunk, in chunk order."""
        return self.sentence_vectors @ query_vec.astype(np.float32)

    def dense_scores(self, query_vec: np.ndarray) -> np.ndarray:
        """Chunk-level cosine blended with the best sentence of the chunk (multi-vector)."""
        q = query_vec.astype(np.float32)
        chunk = self.vectors @ q
        w = self.fusion.sentence_weight
        if w <= 0 or not len(chunk):
            return chunk
        best_sentence = np.maximum.reduceat(self.sentence_scores(q), self.sentence_starts)
        return (1 - w) * chunk + w * best_sentence

    def lexical_scores(self, query: str) -> np.ndarray:
        s = lexical_scores(self.index.lexical, query, self.bigrams)
        return s if s.size else np.zeros(len(self.chunks), dtype=np.float32)

    # -- search -------------------------------------------------------------------------------------
    def score_all(self, query: str, mode: str = "hybrid", query_vec: np.ndarray | None = None,
                  mask: np.ndarray | None = None, lexical: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(fused score, dense score or None in lexical mode, lexical score) for every chunk.

        The fused score is -inf where the mask excludes a chunk.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        n = len(self.chunks)
        lex = lexical if lexical is not None else self.lexical_scores(query)
        dense = None
        if mode != "lexical" or query_vec is not None:
            dense = self.dense_scores(query_vec if query_vec is not None else self.encode_query(query))
        allowed = mask if mask is not None else np.ones(n, dtype=bool)
        if mode == "dense":
            fused = dense.astype(np.float64)
        elif mode == "lexical":
            fused = lex.astype(np.float64)
        else:
            fused = self._fuse(dense, lex, allowed)
        fused = np.where(allowed, fused, -np.inf)
        return fused, dense, lex

    def _fuse(self, dense: np.ndarray, lex: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        f = self.fusion
        idx = np.flatnonzero(allowed)
        fused = np.full(len(dense), -np.inf)
        if idx.size == 0:
            return fused
        n = min(f.candidates, idx.size)
        top_d = idx[np.argsort(-dense[idx], kind="stable")[:n]]
        lex_pos = idx[lex[idx] > 0]
        top_l = lex_pos[np.argsort(-lex[lex_pos], kind="stable")[:n]]
        cand = np.union1d(top_d, top_l)
        if f.method == "rrf":
            rank_d = {int(i): r for r, i in enumerate(top_d)}
            rank_l = {int(i): r for r, i in enumerate(top_l)}
            for i in cand:
                s = 0.0
                if int(i) in rank_d:
                    s += 1.0 / (f.rrf_k + rank_d[int(i)] + 1)
                if int(i) in rank_l:
                    s += 1.0 / (f.rrf_k + rank_l[int(i)] + 1)
                fused[i] = s
            return fused
        d = _minmax(dense[cand].astype(np.float64))
        lx = lex[cand].astype(np.float64)
        l_norm = _minmax(lx) if lx.max() > 0 else np.zeros_like(lx)
        fused[cand] = f.alpha * d + (1 - f.alpha) * l_norm
        return fused

    def search(self, query: str, k: int = 10, mode: str = "hybrid", doc_id: str | None = None,
               section: str | None = None, query_vec: np.ndarray | None = None,
               lexical: np.ndarray | None = None) -> list[Hit]:
        """The k best chunks. `query_vec` and `lexical` (BM25 scores) may be passed when already computed."""
        mask = self.filter_mask(doc_id, section)
        fused, dense, lex = self.score_all(query, mode, query_vec, mask, lexical)
        finite = np.flatnonzero(np.isfinite(fused))
        if mode == "lexical":
            finite = finite[lex[finite] > 0]  # a lexical search returns only chunks that share a term
        elif mode == "hybrid" and dense is not None:
            keep = (lex[finite] > 0) | (dense[finite] >= self.fusion.min_dense_without_terms)
            finite = finite[keep]
        order = sorted(finite.tolist(), key=lambda i: (-fused[i], self.ids[i]))[:k]
        return [Hit(i, self.chunks[i], float(fused[i]), None if dense is None else float(dense[i]), float(lex[i]))
                for i in order]
