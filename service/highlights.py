"""Highlights: the character spans of a passage whose words match the query (same stem, stop words ignored).

A passage's words are split, normalized and stemmed once and kept (`passage_terms`, a bounded LRU keyed by the
text: the same passages come back query after query), and the query's stems are computed once per request
(`query_terms`), so marking k passages is a scan of stems already known.
"""

from __future__ import annotations

from array import array
from functools import lru_cache

from indexer.text import STOPWORDS, stem, token_spans

PASSAGE_CACHE = 2048  # passages whose stems are kept (about 2.5 KB each for a 130-token passage)


@lru_cache(maxsize=PASSAGE_CACHE)
def passage_terms(text: str) -> tuple[array, array, tuple[str, ...]]:
    """(starts, ends, stems) of the words of `text` that are not stop words, in order."""
    words = [(a, b, stem(t)) for a, b, t in token_spans(text) if t not in STOPWORDS]
    return array("i", [w[0] for w in words]), array("i", [w[1] for w in words]), tuple(w[2] for w in words)


def query_terms(query: str, common: frozenset[str] = frozenset()) -> frozenset[str]:
    """The stems a passage's words are marked for. Words in `common` (in most passages of the corpus, like the
    report's own name) count only when the query has nothing else, so that the marks point at what
    distinguishes a passage."""
    wanted = {stem(t) for _, _, t in token_spans(query) if t not in STOPWORDS}
    if wanted - common:
        wanted -= common
    return frozenset(wanted)


def spans_for(text: str, wanted: frozenset[str]) -> list[list[int]]:
    """[start, end) spans of `text` whose words have a stem in `wanted`; neighbours separated by white space
    only are one span ("CFN working group")."""
    if not wanted:
        return []
    starts, ends, stems = passage_terms(text)
    spans: list[list[int]] = []
    for i, s in enumerate(stems):
        if s not in wanted:
            continue
        a = starts[i]
        if spans and not text[spans[-1][1] : a].strip():
            spans[-1][1] = ends[i]
        else:
            spans.append([a, ends[i]])
    return spans


def highlight_spans(text: str, query: str, common: frozenset[str] = frozenset()) -> list[list[int]]:
    """Character spans of `text` whose words match a query word (see `query_terms` and `spans_for`)."""
    return spans_for(text, query_terms(query, common))
