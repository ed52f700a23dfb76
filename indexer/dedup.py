"""Linear-time helpers for the build: line numbers of character offsets, and near-duplicate paragraphs.

Both replace scans that grew with the square of a document: counting newlines from the start of the text for
every chunk and block, and comparing every paragraph with every earlier one.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from functools import lru_cache


class LineIndex:
    """1-based line number of any character offset of a text: newline offsets found once, then bisect."""

    def __init__(self, text: str) -> None:
        self.newlines: list[int] = []
        i = text.find("\n")
        while i != -1:
            self.newlines.append(i)
            i = text.find("\n", i + 1)

    def line_of(self, offset: int) -> int:
        """Same as text.count("\\n", 0, offset) + 1."""
        return bisect.bisect_left(self.newlines, offset) + 1


@lru_cache(maxsize=8)
def line_index(text: str) -> LineIndex:
    """The LineIndex of `text`, kept for the few documents being chunked (a str caches its own hash)."""
    return LineIndex(text)


def _order(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()


class NearDuplicates:
    """Word sets seen so far, and for a new one the first earlier set with Jaccard similarity >= threshold.

    Exact (the same answer as comparing with every earlier set) through prefix filtering: with the tokens of
    every set in one global order, two sets with Jaccard >= t share a token among the first
    |x| - ceil(t·|x|) + 1 of each. Only sets sharing such a prefix token, and of a compatible size, are
    compared; a paragraph is compared with a handful of others rather than with all earlier ones.
    """

    def __init__(self, threshold: float) -> None:
        self.t = threshold
        self._sets: list[tuple[frozenset[str], int]] = []
        self._postings: dict[str, list[int]] = {}

    def _prefix(self, words: frozenset[str]) -> list[str]:
        n = len(words)
        keep = n - math.ceil(self.t * n - 1e-9) + 1
        return sorted(words, key=_order)[: max(0, keep)]

    def find(self, words: set[str] | frozenset[str]) -> int | None:
        """The tag of the first set added whose Jaccard similarity with `words` is >= the threshold."""
        words = frozenset(words)
        if self.t <= 0:
            return self._sets[0][1] if self._sets else None
        cands: set[int] = set()
        for tok in self._prefix(words):
            cands.update(self._postings.get(tok, ()))
        for i in sorted(cands):
            ws, tag = self._sets[i]
            if len(words & ws) / max(1, len(words | ws)) >= self.t:
                return tag
        return None

    def add(self, words: set[str] | frozenset[str], tag: int) -> None:
        words = frozenset(words)
        i = len(self._sets)
        self._sets.append((words, tag))
        for tok in self._prefix(words):
            self._postings.setdefault(tok, []).append(i)
