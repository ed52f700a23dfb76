"""The build's linear helpers give the same answers as the quadratic scans they replace."""

from __future__ import annotations

import random

from indexer.chunking import ChunkingConfig, Counters, chunk_markdown
from indexer.dedup import LineIndex, NearDuplicates
from tests.conftest import DOC_ID


def test_line_index_matches_counting_newlines():
    text = "a\nbb\n\nccc\n" * 50 + "tail"
    li = LineIndex(text)
    for off in range(len(text) + 1):
        assert li.line_of(off) == text.count("\n", 0, off) + 1


def _brute(seen, words, t):
    return next((tag for ws, tag in seen if len(words & ws) / max(1, len(words | ws)) >= t), None)


def test_near_duplicates_match_the_all_pairs_scan():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(60)]
    for t in (0.3, 0.5, 0.8):
        nd, seen = NearDuplicates(t), []
        found = 0
        for tag in range(400):
            if seen and rng.random() < 0.3:  # a variant of an earlier set: some hits
                base = rng.choice(seen)[0]
                words = {w for w in sorted(base) if rng.random() > 0.1} | set(rng.sample(vocab, 2))
            else:
                words = set(rng.sample(vocab, rng.randint(0, 25)))
            want = _brute(seen, words, t)
            assert nd.find(words) == want, (t, tag)
            found += want is not None
            if want is None:
                nd.add(words, tag)
                seen.append((frozenset(words), tag))
        assert found > 10


def test_report_keeps_its_three_near_duplicates(report_text):
    counters = Counters(tokens=lambda s: len(s.split()), pieces=lambda s: len(s.split()) + 2)
    out = chunk_markdown(DOC_ID, report_text, counters, ChunkingConfig())
    assert sum("repeats the one at line" in w for w in out.warnings) == 3
