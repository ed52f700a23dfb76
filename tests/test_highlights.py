"""Highlights: the cached implementation (service/highlights.py) marks exactly what the one it replaced did."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.text import STOPWORDS, stem, token_spans
from service.highlights import highlight_spans, passage_terms, query_terms, spans_for
from tests.conftest import REPORT


def reference_spans(text: str, query: str, common: frozenset[str] = frozenset()) -> list[list[int]]:
    """The implementation before the cache (service/retrieval.py up to 2026-11-25), kept as the oracle."""
    wanted = {stem(t) for _, _, t in token_spans(query) if t not in STOPWORDS}
    if wanted - common:
        wanted -= common
    if not wanted:
        return []
    spans: list[list[int]] = []
    for a, b, t in token_spans(text):
        if t in STOPWORDS or stem(t) not in wanted:
            continue
        if spans and not text[spans[-1][1] : a].strip():
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return spans


def test_hand_worked_cases():
    text = "The CFN working group met. Working groups of the board: the Board's chair."
    # "working" and "groups" stem to work/group; "CFN working group" is one span (white space between)
    assert highlight_spans(text, "working groups") == [[8, 21], [27, 41]]
    assert highlight_spans(text, "the of") == []  # stop words only: nothing to mark
    # "board" is common: ignored when the query has another word, used when it has nothing else
    assert highlight_spans(text, "board chair", frozenset({"board"})) == [[68, 73]]
    assert highlight_spans(text, "board", frozenset({"board"})) == [[49, 54], [60, 67]]  # board, Board's
    assert spans_for(text, frozenset()) == []
    assert query_terms("Working groups!", frozenset()) == frozenset({"work", "group"})


def test_same_spans_as_before_on_the_report_for_its_questions():
    from eval.datasets import load_report_set

    text = REPORT.read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    queries = [q.text for split in ("dev", "test", "fresh") for q in load_report_set(split).queries]
    common = frozenset({stem("openinfra"), stem("foundation")})
    checked = marked = 0
    for q in queries:
        for p in paragraphs[::7]:
            for c in (frozenset(), common):
                ours = highlight_spans(p, q, c)
                assert ours == reference_spans(p, q, c), (q, p[:80])
                checked += 1
                marked += bool(ours)
    assert checked > 1000 and marked > 100  # the comparison covered passages with marks, not only empty ones
    assert passage_terms.cache_info().hits > 0  # passages seen again were not split again


words = st.sampled_from(["board", "Board's", "chair", "the", "of", "3,000", "CI/CD", "naïve", "O'Neil", "kata",
                         "containers", "OpenInfra", "’s", "e.g.", "2023", "working", "groups", "-", "\n", "  "])


@settings(max_examples=300, deadline=None)
@given(text=st.lists(words, max_size=40).map(" ".join) | st.text(max_size=200),
       query=st.lists(words, min_size=1, max_size=6).map(" ".join) | st.text(max_size=40),
       common=st.frozensets(st.sampled_from(["board", "openinfra", "contain", "the"]), max_size=2))
def test_same_spans_as_before_on_any_text(text, query, common):
    assert highlight_spans(text, query, common) == reference_spans(text, query, common)
