"""Property tests (Hypothesis) of the markdown parser and the chunker: any text, markdown-like or not, parses
and chunks without error, and every block and chunk cites a span of the source that holds its text."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexer.chunking import ChunkingConfig, Counters, chunk_markdown
from indexer.markdown import parse_markdown

# pieces of markdown, so that generated text often has headings, lists, fences, links, emphasis, front matter
TOKENS = ["# ", "## ", "### ", "\n", "\n\n", "**", "*", "_", "`", "```", "- ", "1. ", "> ", "[", "](", ")", "![",
          "<br>", "<script>", "---\n", "title: x\n", "    ", "\t", "\\*", ".", "? ", "! ", ":", "|", "&amp;",
          "Kata", "Containers", "OpenInfra", "2023", "é", "日本", "\u202e", "\x00", "\r\n", " ", "word"]
WORDS = [" the board ", " members met in Berlin. ", " It grew 20% ", " Who chairs it? ", " community "]
piece = st.one_of(st.sampled_from(TOKENS), st.sampled_from(WORDS), st.text(max_size=8))
markdownish = st.lists(piece, max_size=160).map("".join)
any_text = st.one_of(markdownish, st.text(max_size=400))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _alnum(s: str) -> list[str]:
    return [ch for ch in s if ch.isalnum()]


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(ch in it for ch in needle)


@FAST
@given(any_text)
def test_parser_blocks_point_into_the_source(text):
    parsed = parse_markdown(text)
    for section in parsed.sections:
        assert section.heading_path[-1:] == [section.title] or section.level == 0
        for b in section.blocks:
            assert text[b.char_start : b.char_end] == b.raw
            assert text.count("\n", 0, b.char_start) + 1 == b.line_start
            assert b.line_start <= b.line_end
            assert _is_subsequence(_alnum(b.text), _alnum(b.raw))  # rendering only removes markup


@FAST
@given(any_text, st.sampled_from([24, 48, 256]))
def test_chunks_cite_spans_that_hold_their_text(text, max_pieces):
    counters = Counters(tokens=lambda s: len(s.split()), pieces=lambda s: len(s.split()) + 2)
    cfg = ChunkingConfig(max_pieces=max_pieces, target_tokens=max_pieces // 2, min_section_words=1)
    out = chunk_markdown("doc", text, counters, cfg)
    for c in out.chunks:
        span = text[c.char_start : c.char_end]
        assert c.text.strip() and span == span.strip()
        assert _is_subsequence(_alnum(c.text), _alnum(span))
        assert text.count("\n", 0, c.char_start) + 1 == c.line_start
        assert text.count("\n", 0, c.char_end) + 1 == c.line_end
        assert counters.pieces(c.embed_text) <= max_pieces  # fits the model: nothing truncated
    assert len({c.chunk_id for c in out.chunks}) == len(out.chunks)
