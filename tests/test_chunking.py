"""Chunking the real report with the real tokenizer: limits, offsets, placeholders, duplicates, ids."""

import re

from indexer.chunking import ChunkingConfig, Counters, chunk_markdown, chunk_record
from indexer.markdown import render_block
from indexer.text import sentence_as_read
from tests.conftest import DOC_ID


def _words(s: str) -> list[str]:
    return re.findall(r"\w+", s)


def test_no_chunk_over_the_model_limit_and_none_empty(report_chunks, real_embedder):
    assert report_chunks.chunks
    for c in report_chunks.chunks:
        assert c.text.strip()
        assert real_embedder.count_pieces(c.embed_text) <= real_embedder.max_pieces
        assert c.tokens > 0


def test_offsets_round_trip(report_chunks, report_text):
    """The cited source span, rendered, is the chunk's text; lines agree with the character offsets."""
    for c in report_chunks.chunks:
        span = report_text[c.char_start : c.char_end]
        assert span == span.strip()
        rendered = "\n\n".join(render_block(p) for p in re.split(r"\n\s*\n", span) if render_block(p))
        assert " ".join(rendered.split()) == " ".join(c.text.split())
        # every word of the chunk is in the source span, in order (links only lose their markup)
        src_words = _words(span)
        pos = 0
        for w in _words(c.text):
            pos = src_words.index(w, pos) + 1
        assert report_text.count("\n", 0, c.char_start) + 1 == c.line_start
        assert report_text.count("\n", 0, c.char_end) + 1 == c.line_end


def test_known_passages_have_their_heading_paths(report_chunks):
    def find(needle):
        return next(c for c in report_chunks.chunks if needle in c.text)

    c = find("covers LOKI, Cloud Infrastructure for AI")
    assert c.heading_path == ["State of OpenInfra in China", "OpenInfra Days China"]
    assert c.section == "OpenInfra Days China" and c.anchor == "openinfra-days-china"
    assert c.url == "https://openinfra.dev/annual-report/2023#openinfra-days-china"
    assert c.line_start <= 195 <= c.line_end
    assert find("Kata Containers 3.0").heading_path == ["State of OpenInfra in China", "Kata Containers"]
    assert find("Soumaya Msallem").heading_path == ["Introducing OpenInfra Regional Hubs", "OpenInfra Europe"]
    assert find("Julia Kreger").section == "Note from the Chair of the OpenInfra Foundation Board of Directors"
    lss = find("The Large Scale SIG aims")
    assert lss.anchor == "large-scale-sig-1"


def test_the_report_s_five_signed_sections_carry_their_bylines(report_chunks):
    signed = {c.section: c.byline for c in report_chunks.chunks if c.byline}
    assert signed == {
        "Empowering A Global Community to Overcome Open Source Threats":
            "Jonathan Bryce, Executive Director, OpenInfra Foundation",
        "Note from the Chair of the OpenInfra Foundation Board of Directors": "Julia Kreger, Board Chair",
        "State of OpenInfra": "Thierry Carrez, General Manager, OpenInfra Foundation",
        "Introducing OpenInfra Regional Hubs": "Wes Wilson, VP of Operations, OpenInfra Foundation",
        "State of OpenInfra in China": "Haoyang Li, China Community Manager, OpenInfra Foundation"}
    # every chunk of a signed section carries it, and the byline stays in the text that answers quote
    first = next(c for c in report_chunks.chunks if c.section == "State of OpenInfra")
    assert all(c.byline == first.byline for c in report_chunks.chunks if c.section == first.section)
    assert first.text.startswith(first.byline)


def test_the_models_read_a_byline_as_who_wrote_the_section(counters):
    text = "Jane Doe, Editor\n\nThe summit drew 1,200 attendees."
    chunk = {"text": text, "byline": "Jane Doe, Editor"}
    assert sentence_as_read(chunk, 0, 16) == "Written by Jane Doe, Editor"
    assert sentence_as_read(chunk, 18, len(text)) == "The summit drew 1,200 attendees."
    assert sentence_as_read({"text": text}, 0, 16) == "Jane Doe, Editor"  # an index without bylines
    assert sentence_as_read({"text": "By Jane Doe", "byline": "By Jane Doe"}, 0, 11) == "Written by Jane Doe"
    unsigned = chunk_markdown("d", "# Letter\n\n***Jane Doe, Editor***\n\nText here.\n", counters,
                              ChunkingConfig(bylines=False))
    assert [c.byline for c in unsigned.chunks] == [None]


def test_placeholders_and_stray_fragments_are_warned_not_indexed(report_chunks):
    w = "\n".join(report_chunks.warnings)
    assert "OpenInfra Foundation Associate Members" in w and "CONTENT NEEDED" in w
    assert "'Large Scale SIG' (line 282)" in w
    assert not any(c.anchor in ("openinfra-foundation-associate-members", "large-scale-sig")
                   for c in report_chunks.chunks)


def test_near_duplicate_paragraphs_are_indexed_once(report_chunks):
    texts = [c.text for c in report_chunks.chunks]
    assert sum("simplification of a past process" in t.lower() for t in texts) == 1
    assert sum("while i speak of" in t.lower() for t in texts) == 1
    assert sum("repeats the one at line" in w for w in report_chunks.warnings) == 3
    # short look-alike labels are not duplicates
    assert any("advisory board of OpenInfra Asia consists of" in t for t in texts)
    assert any("advisory board of OpenInfra Europe comprises" in t for t in texts)


def test_chunk_ids_are_stable_and_unique(report_text, counters, report_chunks):
    again = chunk_markdown(DOC_ID, report_text, counters, ChunkingConfig())
    assert [c.chunk_id for c in again.chunks] == [c.chunk_id for c in report_chunks.chunks]
    assert len({c.chunk_id for c in report_chunks.chunks}) == len(report_chunks.chunks)


def test_tiny_model_limit_splits_at_sentences_without_truncation(report_text):
    counters = Counters(tokens=lambda s: len(s.split()), pieces=lambda s: len(s.split()) + 2)
    cfg = ChunkingConfig(max_pieces=48, target_tokens=30)
    out = chunk_markdown(DOC_ID, report_text, counters, cfg)
    assert all(counters.pieces(c.embed_text) <= 48 for c in out.chunks)
    joined = " ".join(c.text for c in out.chunks)
    assert "Jonathan Bryce" in joined and "Soumaya Msallem" in joined


def test_jsonl_record_becomes_one_section_document():
    counters = Counters(tokens=lambda s: len(s.split()), pieces=lambda s: len(s.split()) + 2)
    rec = {"_id": "42", "title": "A title", "text": "First sentence here. " * 40}
    out = chunk_record(rec, 3, 100, 200, counters, ChunkingConfig(max_pieces=64))
    assert out.doc_id == "42" and len(out.chunks) > 1
    assert all(c.line_start == 3 and c.heading_path == ["A title"] for c in out.chunks)
    assert all(counters.pieces(c.embed_text) <= 64 for c in out.chunks)


def test_near_duplicate_index_finds_the_same_paragraph_as_comparing_with_every_one():
    import random

    from indexer.chunking import _Paragraphs

    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(30)]
    seen, brute = _Paragraphs(0.5), []
    found = 0
    for line in range(1, 400):
        words = set(rng.sample(vocab, rng.randint(3, 12)))
        expected = next((ln for ws, ln in brute if len(words & ws) / max(1, len(words | ws)) >= 0.5), None)
        assert seen.first_similar(words) == expected
        if expected is None:
            seen.add(words, line)
            brute.append((words, line))
        else:
            found += 1
    assert found > 10  # the case was exercised


def test_an_index_built_with_other_chunker_settings_is_stale(real_index):
    """`indexer ensure` (make serve) rebuilds an index whose chunks were cut, or bylines read, otherwise."""
    from indexer.cli import stale_reason
    from tests.conftest import CORPUS

    assert stale_reason(CORPUS, real_index) is None
    assert stale_reason(CORPUS, real_index, ChunkingConfig(bylines=False)) == \
        "the chunker settings have changed (bylines)"


def test_the_report_s_bylines_are_embedded_as_who_wrote_the_section(report_chunks):
    from indexer.build import sentence_texts_of
    from indexer.text import sentence_spans

    read = []
    for c in report_chunks.chunks:
        d = c.to_dict()
        d["sentences"] = sentence_spans(d["text"])  # as the build splits them
        read += [t for t in sentence_texts_of(d) if "Written by" in t]
    assert len(read) == 5 and any(t.endswith("Written by Julia Kreger, Board Chair") for t in read)
