"""Markdown parsing with markdown-it-py (CommonMark): front matter, sections with heading paths and anchors,
blocks whose rendered text maps back to source offsets.

Pure functions over a string; no file I/O. Offsets are into the full source text (front matter included),
line numbers are 1-based.

Every block-level token of markdown-it carries `.map`, the source lines it came from; that is the basis of a
block's citation. Inside a block, the rendered text is built word by word, and each word is located in the
source (inline tokens have no offsets of their own), so that any span of the rendered text (a sentence, a
list item, a table row) maps back to the characters of the source it came from (`Block.source_span`).

What is kept as text:
- paragraphs (soft line breaks become spaces); links shown as their text; images, footnote references,
  emphasis markers and layout or formatting tags (`<br>`, `<b>`, `<ul/>` …) dropped; any other inline
  markup (`<script>`, `<img …>`) kept as the characters it is (clients show it as text);
- ATX and setext headings open sections; so does a line of a top-level paragraph that is bold and nothing
  else (`**Kata Containers**`), but not `***bold italic***` (a byline, kept as text, and recorded as the
  section's `byline` when it is the first block under a heading: `_is_byline`);
- lists: one line per item, `- ` before it (ordered and nested items too); tables: one line per row, cells
  joined by ` | `; block quotes and footnote definitions: their text; code: its lines;
- HTML blocks: their text without tags (comments, scripts and styles dropped); a block left empty is empty.
"""

from __future__ import annotations

import bisect
import html
import re
from dataclasses import dataclass, field
from functools import lru_cache

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from indexer.text import sentence_spans

# Layout and formatting tags carry no text of their own: dropped. Any other tag stays as characters.
_DROPPED_TAGS = frozenset(
    """a abbr b big br center cite code dd del details div dl dt em figcaption figure font footer h1 h2 h3 h4
    h5 h6 header hr i ins kbd li mark nav nobr ol p picture q s section small source span strike strong sub
    summary sup table tbody td th thead tr tt u ul wbr""".split()
)
_TAG_NAME = re.compile(r"^<\s*/?\s*([A-Za-z][A-Za-z0-9-]*)")
_HTML_SKIP = re.compile(r"<!--.*?(?:-->|\Z)|<(script|style)\b.*?(?:</\1\s*>|\Z)|<\?.*?(?:\?>|\Z)|<![A-Z].*?(?:>|\Z)",
                        re.I | re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_ANY_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.S)
_WORDS = re.compile(r"\S+")
_SEP_RANK = {"": 0, " ": 1, " | ": 2, "\n": 3}


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"]).use(front_matter_plugin).use(footnote_plugin)
    md.disable("text_join")  # keep entities and escapes as their own tokens, with their source form
    return md


@dataclass(frozen=True)
class Block:
    """A paragraph-level block of the source: a paragraph, a list, a table, a code block, a quote.

    `text` is what is indexed; `_ts`/`_ss`/`_se` align it with the source: the word at `text[_ts[i]:]`
    comes from `source[_ss[i]:_se[i]]` (same length unless it was an entity or a list marker)."""

    char_start: int
    char_end: int
    line_start: int
    line_end: int
    raw: str
    text: str  # rendered: links shown as their text, images and markup removed
    kind: str = "paragraph"
    _ts: tuple[int, ...] = ()
    _te: tuple[int, ...] = ()
    _ss: tuple[int, ...] = ()
    _se: tuple[int, ...] = ()
    _source: str = field(default="", repr=False, compare=False)
    emphasized: bool = False  # a paragraph in emphasis and nothing else (`***Name, Title***`): maybe a byline

    def source_span(self, a: int, b: int) -> tuple[int, int]:
        """Source offsets [start, end) of the rendered text `text[a:b]` (a < b, no white space at its ends).

        A span that starts at a word also takes the markup just before it (`**`, `[`, a list marker), and one
        that ends at a word the markup just after it (`**`, `](url)`), so the source span renders to the text."""
        if not self._ts or a >= b:
            return self.char_start, self.char_end
        src = self._source
        i = bisect.bisect_right(self._ts, a) - 1
        if i >= 0 and a < self._te[i]:
            literal = self._te[i] - self._ts[i] == self._se[i] - self._ss[i]
            start = self._ss[i] + (a - self._ts[i]) if literal else self._ss[i]
            at_word = a == self._ts[i]
        else:
            i += 1
            start = self._ss[i] if i < len(self._ts) else self.char_end
            at_word = True
        if at_word:
            lo = self._se[i - 1] if i > 0 else self.char_start
            while start > lo and not src[start - 1].isspace():
                start -= 1
        j = bisect.bisect_right(self._ts, b - 1) - 1
        if j >= 0 and b - 1 < self._te[j]:
            literal = self._te[j] - self._ts[j] == self._se[j] - self._ss[j]
            end = self._ss[j] + (b - self._ts[j]) if literal else self._se[j]
            at_end = b == self._te[j]
        else:
            end = self._se[j] if j >= 0 else self.char_start
            at_end = True
        if at_end:
            hi = self._ss[j + 1] if j + 1 < len(self._ts) else self.char_end
            while end < hi and not src[end].isspace():
                end += 1
        start = max(self.char_start, min(start, self.char_end))
        end = min(self.char_end, max(end, start))
        return start, end


@dataclass
class Section:
    title: str
    level: int  # 1..6 for headings, 7 for bold-only sub-headings, 0 for text before any heading
    heading_path: list[str]
    anchor: str
    line: int  # line of the heading (0 for the preamble)
    blocks: list[Block] = field(default_factory=list)
    byline: str | None = None  # "Jonathan Bryce, Executive Director": see _is_byline


@dataclass
class ParsedDocument:
    metadata: dict
    sections: list[Section]


class LineIndex:
    """Offsets of line starts, for 1-based line numbers of offsets in O(log n)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.length = len(text)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def start_of(self, line0: int) -> int:
        """Offset of the 0-based line `line0` (the text's length past the last line)."""
        return self.starts[line0] if line0 < len(self.starts) else self.length


def parse_front_matter(text: str) -> tuple[dict, int]:
    """Return (metadata, offset where the body starts). Metadata is {} when there is no front matter."""
    tokens = _parser().parse(text) if text.startswith("---") else []
    if not tokens or tokens[0].type != "front_matter" or not tokens[0].map:
        return {}, 0
    return _yaml(tokens[0].content), LineIndex(text).start_of(tokens[0].map[1])


def _yaml(content: str) -> dict:
    try:
        data = yaml.safe_load(content) or {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def document_metadata(front: dict) -> dict:
    """Title, url and description from front matter, looking inside an `seo` block as a fallback."""
    seo = front.get("seo") if isinstance(front.get("seo"), dict) else {}

    def pick(key: str) -> str | None:
        value = front.get(key) or seo.get(key)
        return str(value).strip() if value else None

    return {"title": pick("title"), "url": pick("url"), "description": pick("description")}


def slugify(title: str) -> str:
    """GitHub-style anchor: lower case, punctuation removed, spaces to hyphens."""
    s = title.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


class _Slugger:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def unique(self, title: str) -> str:
        base = slugify(title) or "section"
        n = self.seen.get(base)
        if n is None:
            self.seen[base] = 0
            return base
        n += 1
        while f"{base}-{n}" in self.seen:
            n += 1
        self.seen[base] = n
        self.seen[f"{base}-{n}"] = 0
        return f"{base}-{n}"


def strip_dropped_tags(s: str) -> str:
    """`s` without the tags the parser drops (layout, formatting, comments); other markup is kept."""
    return _ANY_TAG.sub(lambda m: "" if _dropped_tag(m.group(0)) else m.group(0), s)


def _dropped_tag(tag: str) -> bool:
    if tag.startswith("<!--"):
        return True
    m = _TAG_NAME.match(tag)
    return bool(m) and m.group(1).lower() in _DROPPED_TAGS


class _Text:
    """Rendered text built word by word, each word located in the source (at or after a cursor)."""

    def __init__(self, source: str, lo: int, hi: int) -> None:
        # CommonMark replaces NUL with U+FFFD in what it renders; look the words up in the source the same way
        # (one character for one: offsets are unchanged)
        self.src, self.hi, self.cur = source.replace("\x00", "\ufffd"), hi, lo
        self.parts: list[str] = []
        self.n = 0
        self.ts: list[int] = []
        self.te: list[int] = []
        self.ss: list[int] = []
        self.se: list[int] = []
        self.pending = ""
        self.after_prefix = False

    def brk(self, sep: str) -> None:
        if self.n and not self.after_prefix and _SEP_RANK[sep] > _SEP_RANK[self.pending]:
            self.pending = sep

    def seek(self, offset: int) -> None:
        self.cur = max(self.cur, offset)

    def _emit(self, s: str, ss: int, se: int) -> None:
        if self.pending and self.n:
            self.parts.append(self.pending)
            self.n += len(self.pending)
        self.pending = ""
        self.after_prefix = False
        if ss >= 0:
            self.ts.append(self.n)
            self.te.append(self.n + len(s))
            self.ss.append(ss)
            self.se.append(se)
        self.parts.append(s)
        self.n += len(s)

    def word(self, w: str, source_form: str | None = None) -> None:
        """A word of the rendered text; `source_form` is how it is written in the source when that differs."""
        form = source_form or w
        p = self.src.find(form, self.cur, self.hi)
        if p >= 0:
            self.cur = p + len(form)
            self._emit(w, p, p + len(form))
        else:
            self._emit(w, -1, -1)

    def words(self, s: str) -> None:
        pos = 0
        for m in _WORDS.finditer(s):
            if m.start() > pos:
                self.brk(" ")
            self.word(m.group(0))
            pos = m.end()
        if pos < len(s):
            self.brk(" ")

    def at(self, w: str, ss: int, se: int) -> None:
        """A word whose source position is known."""
        self.cur = max(self.cur, se)
        self._emit(w, ss, se)

    def prefix(self, p: str, ss: int, se: int) -> None:
        if self.n:
            self.pending = "\n"
        self._emit(p, ss, se)
        self.after_prefix = True

    def inline(self, children: list[Token]) -> None:
        for t in children:
            if t.type in ("text", "code_inline"):
                self.words(t.content)
            elif t.type == "text_special":
                if t.content.strip():
                    self.word(t.content, t.markup or t.content)
                else:
                    self.brk(" ")
            elif t.type in ("softbreak", "hardbreak"):
                self.brk(" ")
            elif t.type == "html_inline":
                if _dropped_tag(t.content):
                    if t.content[:3].lower() in ("<br", "<p>", "<p "):
                        self.brk(" ")
                    elif t.content[:4].lower() == "<sup":
                        self._emit("^", -1, -1)  # 2<sup>30</sup> reads 2^30, not 230
                else:
                    self.words(t.content)
            elif t.type == "image" or t.type.startswith("footnote_"):
                continue
            elif t.children:
                self.inline(t.children)

    def html(self, lo: int, hi: int) -> None:
        """Text of raw HTML source[lo:hi]: comments, scripts and styles dropped, tags dropped."""
        chunk = self.src[lo:hi]
        keep = [(0, len(chunk))]
        for m in _HTML_SKIP.finditer(chunk):
            a, b = keep.pop()
            keep += [(a, m.start()), (m.end(), b)]
        for a, b in keep:
            pos = a
            for m in list(_HTML_TAG.finditer(chunk, a, b)) + [None]:
                end = m.start() if m else b
                for w in _WORDS.finditer(chunk, pos, end):
                    if w.start() > pos:
                        self.brk(" ")
                    self.at(html.unescape(w.group(0)), lo + w.start(), lo + w.end())
                    pos = w.end()
                if m:
                    self.brk(" ")
                    pos = m.end()

    def code(self, content: str) -> None:
        for line in content.strip("\n").split("\n"):
            self.brk("\n")
            for w in _WORDS.finditer(line):
                if w.start() > 0:
                    self.brk(" ")
                self.word(w.group(0))

    def text(self) -> str:
        return "".join(self.parts)


def _close_index(tokens: list[Token], i: int) -> int:
    """Index of the token closing the one opened at i (i itself for a token that opens nothing)."""
    if tokens[i].nesting != 1:
        return i
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _marker(source: str, lines: LineIndex, tok: Token) -> tuple[int, int]:
    """Source span of a list item's marker (`-`, `*`, `3.`) on its first line."""
    lo = lines.start_of(tok.map[0]) if tok.map else 0
    hi = lines.start_of(tok.map[0] + 1) if tok.map else lo
    mark = (tok.info + tok.markup) if tok.info else tok.markup
    p = source.find(mark, lo, hi) if mark else -1
    return (p, p + len(mark)) if p >= 0 else (lo, lo)


def _render_tokens(tb: _Text, source: str, lines: LineIndex, tokens: list[Token]) -> None:
    """Render a run of block tokens (the inside of a list, quote, table, footnote) into `tb`."""
    row_cells = 0
    for t in tokens:
        if t.map:
            tb.seek(lines.start_of(t.map[0]))
        if t.type == "list_item_open":
            tb.prefix("- ", *_marker(source, lines, t))
        elif t.type == "tr_open":
            tb.brk("\n")
            row_cells = 0
        elif t.type in ("th_open", "td_open"):
            if row_cells:
                tb.brk(" | ")
            row_cells += 1
        elif t.type in ("paragraph_open", "heading_open", "blockquote_open"):
            tb.brk("\n")
        elif t.type == "inline":
            tb.inline(t.children or [])
        elif t.type in ("fence", "code_block"):
            if t.type == "fence" and t.map:
                tb.seek(lines.start_of(t.map[0] + 1))
            tb.code(t.content)
        elif t.type == "html_block" and t.map:
            tb.brk("\n")
            tb.html(lines.start_of(t.map[0]), lines.start_of(t.map[1]))


def _span(source: str, lo: int, hi: int) -> tuple[int, int]:
    """[lo, hi) without white space at either end."""
    while lo < hi and source[lo].isspace():
        lo += 1
    while hi > lo and source[hi - 1].isspace():
        hi -= 1
    return lo, hi


def _make_block(source: str, lines: LineIndex, lo: int, hi: int, tb: _Text, kind: str,
                emphasized: bool = False) -> Block | None:
    start, end = _span(source, lo, hi)
    if start >= end:
        return None
    return Block(start, end, lines.line_of(start), lines.line_of(end), source[start:end], tb.text(), kind,
                 tuple(tb.ts), tuple(tb.te), tuple(tb.ss), tuple(tb.se), source, emphasized)


def _bold_only(line: list[Token]) -> list[Token] | None:
    """The tokens inside the bold of a line that is bold and nothing else (`**x**`, `__x__`), else None."""
    toks = [t for t in line if not (t.type == "text" and not t.content.strip())]
    if len(toks) < 3 or toks[0].type != "strong_open" or toks[-1].type != "strong_close":
        return None
    inner = toks[1:-1]
    if any(t.type in ("strong_open", "strong_close", "em_open", "em_close") for t in inner):
        return None
    return inner


def _all_emphasized(children: list[Token]) -> bool:
    """Is every word of an inline run inside emphasis or bold (`***Name, Title***`, `*By Name*`)?"""
    depth, words = 0, False
    for t in children:
        if t.type in ("em_open", "strong_open"):
            depth += 1
        elif t.type in ("em_close", "strong_close"):
            depth -= 1
        elif t.type in ("softbreak", "hardbreak") or (t.type == "text" and not t.content.strip()):
            continue
        elif depth <= 0:
            return False
        else:
            words = True
    return words


BYLINE_MAX_WORDS = 16


def _is_byline(block: Block, section: Section) -> bool:
    """A byline: the first block under a heading (not under a bold sub-heading, where an emphasized line is
    more often a tagline), a paragraph in emphasis and nothing else, 2 to BYLINE_MAX_WORDS words, capitalized,
    one sentence with no sentence-ending punctuation and no colon (a caption: "*Source: …*")
    ("***Jonathan Bryce, Executive Director, OpenInfra Foundation***"). Read alone it is a name and a title;
    with the convention it says who wrote the section. One sentence, so that the models can read it whole
    (indexer.text.sentence_as_read)."""
    text = block.text.strip()
    return (block.emphasized and 1 <= section.level <= 6 and not section.blocks
            and 2 <= len(text.split()) <= BYLINE_MAX_WORDS and text[:1].isupper() and text[-1] not in ".?!"
            and ":" not in text and len(sentence_spans(text)) == 1)


def _lines_of(children: list[Token]) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for t in children:
        if t.type in ("softbreak", "hardbreak"):
            out.append([])
        else:
            out[-1].append(t)
    return out


def _inline_text(children: list[Token]) -> str:
    tb = _Text("", 0, 0)
    tb.inline(children)
    return " ".join(tb.text().split())


def _bold_line(source: str, lines: LineIndex, lo: int, hi: int, markup: str) -> int | None:
    """The first of source lines lo..hi-1 that is bold and nothing else."""
    for n in range(lo, hi):
        line = source[lines.start_of(n) : lines.start_of(n + 1)].strip()
        if len(line) > 2 * len(markup) and line.startswith(markup) and line.endswith(markup):
            return n
    return None


def _paragraph_events(source: str, lines: LineIndex, pmap: list[int],
                      children: list[Token]) -> list[tuple[int, object]]:
    """A top-level paragraph: its lines that are bold and nothing else are sub-headings, the rest text blocks.

    Token lines are found in the source by their markup (a code span may hide line breaks from the tokens)."""
    out: list[tuple[int, object]] = []
    group: list[Token] = []
    group_line = pmap[0]

    def flush(end_line: int) -> None:
        if group:
            lo, hi = lines.start_of(group_line), lines.start_of(end_line)
            tb = _Text(source, lo, hi)
            tb.inline(group)
            b = _make_block(source, lines, lo, hi, tb, "paragraph", _all_emphasized(group))
            if b:
                out.append((b.char_start, b))

    for line in _lines_of(children):
        inner = _bold_only(line)
        markup = next((t.markup for t in line if t.type == "strong_open"), "")
        n = _bold_line(source, lines, group_line, pmap[1], markup) if inner is not None and markup else None
        if n is None:
            if group:
                group.append(Token("softbreak", "br", 0))
            group += line
            continue
        flush(n)
        group = []
        group_line = n + 1
        title = _inline_text(inner)
        if title:
            out.append((lines.start_of(n), ("heading", title, 7, n + 1)))
    flush(pmap[1])
    return out


def _events(source: str, lines: LineIndex, tokens: list[Token]) -> tuple[dict, list[tuple[int, object]]]:
    """Front matter, and (source offset, heading tuple | Block) in source order."""
    front: dict = {}
    events: list[tuple[int, object]] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        j = _close_index(tokens, i)
        if t.type == "front_matter":
            front = _yaml(t.content)
        elif t.type == "heading_open" and t.map:
            title = _inline_text(tokens[i + 1].children or [])
            if title:
                events.append((lines.start_of(t.map[0]), ("heading", title, int(t.tag[1]), t.map[0] + 1)))
        elif t.type == "paragraph_open" and t.map:
            events += _paragraph_events(source, lines, t.map, tokens[i + 1].children or [])
        elif t.type == "footnote_block_open":
            k = i + 1
            while k < j:
                kk = _close_index(tokens, k)
                inner = tokens[k + 1 : kk]
                maps = [x.map for x in inner if x.map]
                if maps:
                    lo, hi = lines.start_of(min(m[0] for m in maps)), lines.start_of(max(m[1] for m in maps))
                    tb = _Text(source, lo, hi)
                    _render_tokens(tb, source, lines, inner)
                    b = _make_block(source, lines, lo, hi, tb, "footnote")
                    if b:
                        events.append((b.char_start, b))
                k = kk + 1
        elif t.map and t.type != "hr":
            lo, hi = lines.start_of(t.map[0]), lines.start_of(t.map[1])
            tb = _Text(source, lo, hi)
            _render_tokens(tb, source, lines, tokens[i : j + 1])
            kind = {"bullet_list_open": "list", "ordered_list_open": "list", "table_open": "table",
                    "blockquote_open": "quote", "fence": "code", "code_block": "code",
                    "html_block": "html"}.get(t.type, t.type)
            b = _make_block(source, lines, lo, hi, tb, kind)
            if b:
                events.append((b.char_start, b))
        i = j + 1
    events.sort(key=lambda e: e[0])  # footnote definitions come last in the tokens, not in the source
    return front, events


_LONE_CR = re.compile(r"\r(?!\n)")


def parse_markdown(text: str) -> ParsedDocument:
    """Split a markdown document into sections (headings and bold-only lines) holding blocks."""
    lines = LineIndex(text)
    # a lone CR ends a line for CommonMark but not for our line numbers (and editors differ): read it as a space
    # (same length, so every offset and line number is the source's)
    front, events = _events(text, lines, _parser().parse(_LONE_CR.sub(" ", text)))
    slugger = _Slugger()
    preamble = Section(title="", level=0, heading_path=[], anchor="", line=0)
    sections: list[Section] = [preamble]
    stack: list[Section] = []  # open headings, outermost first
    for _, ev in events:
        if isinstance(ev, Block):
            if _is_byline(ev, sections[-1]):
                sections[-1].byline = ev.text.strip()
            sections[-1].blocks.append(ev)
            continue
        _, title, level, line_no = ev
        # A bold line repeating the heading it sits under adds no level.
        if level == 7 and stack and stack[-1].title.lower() == title.lower() and not stack[-1].blocks:
            continue
        while stack and stack[-1].level >= level:
            stack.pop()
        sec = Section(title=title, level=level, heading_path=[s.title for s in stack] + [title],
                      anchor=slugger.unique(title), line=line_no)
        stack.append(sec)
        sections.append(sec)
    return ParsedDocument(metadata=front, sections=[s for s in sections if s.level or s.blocks])


def render_block(raw: str) -> str:
    """The text of a piece of markdown as the parser renders it: its blocks' texts (and heading titles),
    separated by blank lines."""
    parsed = parse_markdown(raw)
    out: list[str] = []
    for s in parsed.sections:
        if s.level:
            out.append(s.title)
        out += [b.text for b in s.blocks if b.text]
    return "\n\n".join(out)
