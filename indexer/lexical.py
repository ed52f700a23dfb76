"""The lexical index: BM25 (bm25s, Lucene variant) over stemmed, stop-word-free tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from indexer.text import analyze


def _bm25s():
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import
    return bm25s

K1 = 0.9
B = 0.4


def lexical_settings(bigrams: bool = True) -> dict:
    """Recorded in the manifest; the service analyzes queries as the index was analyzed."""
    bm25s = _bm25s()
    return {"engine": "bm25s", "version": bm25s.__version__, "method": "lucene", "k1": K1, "b": B,
            "bigrams": bigrams,
            "analyzer": "regex words, numbers without commas, english stop words, snowball english stemmer"}


def build_lexical(texts: Iterable[str], bigrams: bool = True):
    """A BM25 index of `texts` (row i = text i). Texts are turned into term ids one at a time, so a million
    chunks are held as lists of small ints, not lists of strings."""
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(term, len(vocab)) for term in (analyze(t, bigrams) or ["\x00"])] for t in texts]
    retriever = _bm25s().BM25(k1=K1, b=B, method="lucene")
    retriever.index((ids, vocab), show_progress=False)
    return retriever


def lexical_scores(retriever, query: str, bigrams: bool = True) -> np.ndarray:
    """BM25 score of every chunk for `query` (zeros when no query term is in the vocabulary)."""
    terms = analyze(query, bigrams)
    n = int(retriever.scores["num_docs"]) if isinstance(retriever.scores, dict) else None
    if not terms:
        return np.zeros(n or 0, dtype=np.float32)
    return np.asarray(retriever.get_scores(terms), dtype=np.float32)
