"""The markdown survey's checker, and a bounded sample of the real markdown files installed on this machine."""

import pytest

from eval.markdown_survey import check_chunks, default_roots, markdown_files, survey
from indexer.chunking import ChunkingConfig, Counters, chunk_markdown
from tests.test_markdown import OTHER

COUNTERS = Counters(tokens=lambda s: len(s.split()), pieces=lambda s: len(s.split()) + 2)


def test_the_checker_passes_good_citations_and_catches_bad_ones():
    doc = chunk_markdown("other", OTHER, COUNTERS, ChunkingConfig(target_tokens=12, max_pieces=40))
    assert len(doc.chunks) > 5
    assert check_chunks(OTHER, doc) == []
    doc.chunks[2].char_end = doc.chunks[2].char_start + 3  # a citation that no longer holds its text
    doc.chunks[3].line_start += 1
    problems = check_chunks(OTHER, doc)
    assert any("chunk 2" in p and "not in the cited span" in p for p in problems)
    assert any("chunk 3" in p and "disagree" in p for p in problems)


@pytest.mark.slow
def test_a_sample_of_installed_markdown_files_parses_with_sound_citations():
    files = markdown_files(default_roots())
    sample = files[:: max(1, len(files) // 60)][:60]  # spread over packages, bounded
    assert len(sample) >= 20, "too few markdown files installed to survey"
    res = survey(sample)
    assert res.tried >= 20 and res.chunks > 100
    assert res.failures == {}
