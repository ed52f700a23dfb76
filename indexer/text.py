"""Text utilities shared by the indexer and the service: sentences, lexical tokens, near-duplicates."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

# Sentence ends at . ! ? (optionally followed by a closing quote or bracket) before white space and a
# capital letter, digit, quote or bracket; or at a line break (list items, hard breaks); or where scraped
# text lost the space ("disabilities.A line scan").
_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[A-Z0-9\"“‘(\[<*])|\n+|(?<=[a-z]{3}[.!?])(?=[A-Z][a-z ])")
_ABBREV = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|Prof|Inc|Ltd|Co|St|No|U\.S|approx)\.|\b[A-Z]\.)$")

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.,'’][A-Za-z0-9]+)*")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your yours
    yourself yourselves also did does tell give list name show describe many much s t""".split()
)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (white space between sentences excluded)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENT_END.finditer(text):
        if m.group(0).strip() == "" and "\n" not in m.group(0) and _ABBREV.search(text[start : m.start()]):
            continue
        seg = text[start : m.start()]
        if seg.strip():
            lead = len(seg) - len(seg.lstrip())
            spans.append((start + lead, start + len(seg.rstrip())))
        start = m.end()
    seg = text[start:]
    if seg.strip():
        lead = len(seg) - len(seg.lstrip())
        spans.append((start + lead, start + len(seg.rstrip())))
    return spans


def sentence_as_read(chunk: dict, a: int, b: int) -> str:
    """The chunk's text[a:b] as the models read it (the sentence embedding, the reader): the section's byline
    (markdown: a short emphasized paragraph right under its heading, recorded on the chunk) as "Written by
    Jonathan Bryce, Executive Director, …", every other sentence as it is. Answers and citations quote the text
    itself."""
    text = chunk["text"][a:b]
    byline = chunk.get("byline")
    if not byline or text.strip() != byline:
        return text
    return f"Written by {byline[3:] if byline[:3].lower() == 'by ' else byline}"


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("english")


def normalize_token(tok: str) -> str:
    tok = tok.lower().replace("’", "'")
    if tok.endswith("'s"):
        tok = tok[:-2]
    if any(c.isdigit() for c in tok):
        return tok.replace(",", "")
    return tok


def _token_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), normalize_token(m.group(0))) for m in _TOKEN.finditer(text)]


@lru_cache(maxsize=4096)
def token_spans(text: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, normalized token) for every word of `text`, stop words included.

    Memoized (the service reads the same retrieved sentences again and again: /v1/ask spent two thirds of its
    answering time here); the indexer's `analyze` of every chunk, seen once, does not go through the cache."""
    return tuple(_token_spans(text))


@lru_cache(maxsize=65536)
def stem(token: str) -> str:
    return _stemmer().stemWord(token)


def analyze(text: str, bigrams: bool = False) -> list[str]:
    """Lexical analysis for BM25: normalized, stop words removed, stemmed; with `bigrams`, each pair of
    neighbouring terms is added as one more term ("days_china"), so that names made of several words
    count for more than their words scattered over a passage."""
    terms = [stem(t) for _, _, t in _token_spans(text) if t not in STOPWORDS]
    if bigrams:
        terms += [f"{a}_{b}" for a, b in zip(terms, terms[1:], strict=False)]
    return terms


@lru_cache(maxsize=4096)
def stem_set(text: str) -> frozenset[str]:
    """Every word of `text`, normalized and stemmed, stop words included (for "does this text say X?").
    Memoized, like token_spans."""
    return frozenset(stem(t) for _, _, t in token_spans(text))


def word_set(text: str) -> set[str]:
    return {t for _, _, t in _token_spans(text) if t not in STOPWORDS}


def overlap(a: Iterable[str], b: Iterable[str]) -> float:
    """Overlap coefficient |A ∩ B| / min(|A|, |B|) of two word collections (0 when either is empty)."""
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / min(len(sa), len(sb))
