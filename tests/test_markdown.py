"""Parsing: front matter, headings (ATX and bold-only), anchors, fenced code, inline rendering."""

import pytest

from indexer.markdown import document_metadata, parse_markdown, render_block, slugify

DOC = """---
title: Test Doc
seo:
  url: https://example.test/doc
  description: A test
---
Intro text before any heading.

# **Top** heading

***Jane Doe, Author***

Para one with a [link](https://x.test/a) and **bold** words.

**Sub part**<TRAILING>

Text of the sub part.

```
# not a heading
**not a sub-heading**
```

## Second

Second text.

## Second

Again.

### Deeper *level*

- item one
- item [two](https://x.test/b)
""".replace("<TRAILING>", "  ")  # a bold-only line may end in spaces


def test_front_matter_is_metadata_not_text():
    parsed = parse_markdown(DOC)
    meta = document_metadata(parsed.metadata)
    assert meta == {"title": "Test Doc", "url": "https://example.test/doc", "description": "A test"}
    all_text = " ".join(b.text for s in parsed.sections for b in s.blocks)
    assert "templateKey" not in all_text and "example.test/doc" not in all_text


def test_heading_paths_bold_subheadings_and_code_fences():
    parsed = parse_markdown(DOC)
    paths = [s.heading_path for s in parsed.sections]
    assert paths == [[], ["Top heading"], ["Top heading", "Sub part"], ["Top heading", "Second"],
                     ["Top heading", "Second"], ["Top heading", "Second", "Deeper level"]]
    sub = parsed.sections[2]
    # the fenced block belongs to "Sub part", and its '#' line opened no section
    assert any("# not a heading" in b.raw for b in sub.blocks)


def test_byline_in_bold_italics_is_text_not_a_heading():
    top = parse_markdown(DOC).sections[1]
    assert top.blocks[0].text == "Jane Doe, Author"
    assert top.byline == "Jane Doe, Author"  # and the section's byline
    assert [s.byline for s in parse_markdown(DOC).sections[2:]] == [None] * 4


@pytest.mark.parametrize("body,byline", [
    ("***Jane Doe, Author***\n\nText.", "Jane Doe, Author"),
    ("*By Jane Doe*\n\nText.", "By Jane Doe"),
    ("_Jane Doe_ and __Bo Li__\n\nText.", None),  # words outside the emphasis
    ("Text first.\n\n***Jane Doe, Author***", None),  # not the first block under the heading
    ("*This whole paragraph is emphasized, and it ends like a sentence.*\n\nText.", None),
    ("***Word " + "word " * 16 + "end***\n\nText.", None),  # too long to be a name and a title
    ("*Source: the 2023 user survey*\n\nText.", None),  # a caption
    ("*Draft*\n\nText.", None),  # one word
    ("***Jane Doe, Sr. Director***\n\nText.", None),  # two sentences: the models could not read it whole
    ("**Part one**\n*An open source container runtime*\n\nText.", None),  # under a bold sub-heading: a tagline
    ("***Jane Doe, Author***\n\n***Bo Li, Editor***", "Jane Doe, Author"),  # only the first
])
def test_a_byline_is_a_short_emphasized_paragraph_right_under_a_heading(body, byline):
    sections = parse_markdown("# Letter\n\n" + body + "\n").sections
    assert sections[-1].byline == byline
    assert parse_markdown(body).sections[0].byline is None  # before any heading: no section to sign


def test_anchors_are_unique_github_style():
    anchors = [s.anchor for s in parse_markdown(DOC).sections if s.level]
    assert anchors == ["top-heading", "sub-part", "second", "second-1", "deeper-level"]
    assert slugify("OpenInfra Days & Cloud Operator Days") == "openinfra-days--cloud-operator-days"


def test_inline_rendering_keeps_link_text_and_drops_markup():
    assert render_block("A [link](https://x.test/a) and **bold** ![img](i.png) <ul/>") == "A link and bold"
    assert render_block("- one\n- [two](u)") == "- one\n- two"
    # markup that is not layout stays as characters (clients must show it as text)
    assert "<script>" in render_block("x <script>alert(1)</script> y")


def test_offsets_and_lines_point_into_the_source():
    parsed = parse_markdown(DOC)
    for s in parsed.sections:
        for b in s.blocks:
            assert DOC[b.char_start : b.char_end] == b.raw
            assert DOC.count("\n", 0, b.char_start) + 1 == b.line_start
            assert DOC.splitlines()[b.line_start - 1].strip() in b.raw


def test_report_sections(report_text):
    parsed = parse_markdown(report_text)
    by_title = {s.title: s for s in parsed.sections}
    assert by_title["OpenInfra Days China"].heading_path == ["State of OpenInfra in China", "OpenInfra Days China"]
    assert by_title["Kata Containers"].heading_path == ["State of OpenInfra in China", "Kata Containers"]
    assert by_title["OpenInfra Europe"].heading_path == ["Introducing OpenInfra Regional Hubs", "OpenInfra Europe"]
    # "**Social Media Channels**" is followed by a no-break space in the source: still a sub-heading
    assert by_title["Social Media Channels"].heading_path[-1] == "Social Media Channels"
    anchors = [s.anchor for s in parsed.sections if s.title == "Large Scale SIG"]
    assert anchors == ["large-scale-sig", "large-scale-sig-1"]
    # the bold line repeating its own heading adds no level
    assert ["Global Expansion of OpenInfra User Groups"] * 2 not in [s.heading_path for s in parsed.sections]


# -- CommonMark constructs other organizations' reports bring (markdown-it-py) -----------------------------

OTHER = """Annual *review*
=============

Intro with a footnote[^fn] and a [reference link][ref], &amp; an entity, 2<sup>30</sup> bytes.

Budget
------

| Item | Cost |
|------|-----:|
| Servers | 1,200 |
| [Travel](https://x.test) | 300 |

1. First step
   - nested detail
2. Second step

<div align="center">
  <img src="logo.png"> Centred <b>caption</b> text
</div>

<!-- a comment nobody should index -->

> A quoted remark
> over two lines.

    # indented code, not a heading

Text with a `code span
over two lines` and more words.
**Sub heading**
After the sub heading.

[^fn]: The footnote text, cited where it is written.

[ref]: https://example.test/ref
"""


def test_setext_headings_and_sections():
    parsed = parse_markdown(OTHER)
    assert [s.heading_path for s in parsed.sections] == [
        ["Annual review"], ["Annual review", "Budget"], ["Annual review", "Budget", "Sub heading"]]
    assert [s.anchor for s in parsed.sections] == ["annual-review", "budget", "sub-heading"]


def _texts(section):
    return [b.text for b in section.blocks]


def test_tables_lists_html_quotes_footnotes_render_as_text():
    intro, budget, sub = parse_markdown(OTHER).sections
    assert _texts(intro) == ["Intro with a footnote and a reference link, & an entity, 2^30 bytes."]
    texts = _texts(budget)
    assert "Item | Cost\nServers | 1,200\nTravel | 300" in texts
    assert "- First step\n- nested detail\n- Second step" in texts
    assert "Centred caption text" in texts  # tags dropped, text kept
    assert not any("comment" in t for t in texts)  # an HTML comment is not text
    assert "A quoted remark over two lines." in texts
    assert "# indented code, not a heading" in texts  # code, and no section opened by it
    assert "Text with a code span over two lines and more words." in texts
    # the footnote definition is indexed where it is written (under the sub heading), not as a reference
    assert _texts(sub) == ["After the sub heading.", "The footnote text, cited where it is written."]
    assert not any("example.test/ref" in t for s in (intro, budget, sub) for t in _texts(s))


def test_every_sentence_of_every_block_maps_back_into_its_source_span():
    import re

    from indexer.text import sentence_spans

    for s in parse_markdown(OTHER).sections:
        for b in s.blocks:
            assert OTHER[b.char_start : b.char_end] == b.raw
            # the paragraph that holds a code span over a line break ends where it ends in the source
            if b.text.startswith("Text with"):
                assert b.raw.endswith("and more words.")
            for a, e in sentence_spans(b.text):
                lo, hi = b.source_span(a, e)
                assert b.char_start <= lo < hi <= b.char_end
                src = "".join(re.findall(r"\w+", OTHER[lo:hi].replace("<sup>", "")))
                pos = 0
                for w in re.findall(r"\w+", b.text[a:e]):
                    pos = src.index(w, pos) + len(w)


def test_a_table_row_is_cited_by_its_own_line():
    budget = parse_markdown(OTHER).sections[1]
    table = next(b for b in budget.blocks if b.kind == "table")
    row = table.text.index("Travel")
    lo, hi = table.source_span(row, len(table.text))
    assert OTHER[lo:hi] == "[Travel](https://x.test) | 300"
    assert render_block(OTHER[lo:hi]) == "Travel | 300"
