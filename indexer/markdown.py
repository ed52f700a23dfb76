"""Markdown parsing: front matter, sections with heading paths and anchors, blocks with source offsets.

Pure functions over a string; no file I/O. Offsets are into the full source text (front matter included),
line numbers are 1-based.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[^\S\n]*$")
# A line that is bold and nothing else: **Kata Containers** (not ***bold italic***, which is a byline).
_BOLD_ONLY = re.compile(r"^ {0,3}(?:\*\*(?!\*)(?P<a>[^*\n]+?)(?<!\*)\*\*|__(?!_)(?P<b>[^_\n]+?)(?<!_)__)[^\S\n]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

_IMAGE = re.compile(r"!\[([^\]]*)\]\((?:[^()\s]|\([^()]*\))*(?:\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()\s]|\([^()]*\))*(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
# Layout-only tags (<ul/>, <br>, <p>…) are dropped; any other markup (<script>, <img …>) is kept as the
# characters it is, so that clients show it as text.
_HTML_TAG = re.compile(r"</?(?:br|hr|ul|ol|li|p|div|span|center|wbr)\b[^<>]*/?>", re.I)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3})(?=\S)(.+?)(?<=\S)\1")
_HARD_BREAK = re.compile(r"\\$", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[*+-]|\d+[.)])\s+")


@dataclass(frozen=True)
class Block:
    """A paragraph-level block of the source: a paragraph, a list, a fenced code block."""

    char_start: int
    char_end: int
    line_start: int
    line_end: int
    raw: str
    text: str  # rendered: links shown as their text, images and markup removed


@dataclass
class Section:
    title: str
    level: int  # 1..6 for ATX headings, 7 for bold-only sub-headings, 0 for text before any heading
    heading_path: list[str]
    anchor: str
    line: int  # line of the heading (0 for the preamble)
    blocks: list[Block] = field(default_factory=list)


@dataclass
class ParsedDocument:
    metadata: dict
    sections: list[Section]


def parse_front_matter(text: str) -> tuple[dict, int]:
    """Return (metadata, offset where the body starts). Metadata is {} when there is no front matter."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, 0
    try:
        data = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return {}, 0
    if not isinstance(data, dict):
        return {}, 0
    return data, m.end()


def document_metadata(front: dict) -> dict:
    """Title, url and description from front matter, looking inside an `seo` block as a fallback."""
    seo = front.get("seo") if isinstance(front.get("seo"), dict) else {}

    def pick(key: str) -> str | None:
        value = front.get(key) or seo.get(key)
        return str(value).strip() if value else None

    return {"title": pick("title"), "url": pick("url"), "description": pick("description")}


def strip_emphasis(s: str) -> str:
    prev = None
    while prev != s:
        prev = s
        s = _EMPHASIS.sub(r"\2", s)
    return s


def render_inline(s: str) -> str:
    """Markdown inline markup to plain text: images dropped, links shown as their text, emphasis removed."""
    s = _IMAGE.sub("", s)
    s = _LINK.sub(r"\1", s)
    s = _AUTOLINK.sub(r"\1", s)
    s = _HTML_TAG.sub("", s)
    s = _HARD_BREAK.sub("", s)
    s = strip_emphasis(s)
    s = s.replace("\\*", "*").replace("\\_", "_")
    return s


def render_block(raw: str) -> str:
    """Render one block. List items keep one line each (as "- item"); other lines are joined by spaces."""
    if _FENCE.match(raw):
        lines = raw.splitlines()
        body = lines[1:-1] if len(lines) > 1 and _FENCE.match(lines[-1]) else lines[1:]
        return "\n".join(body).strip()
    out: list[str] = []
    for line in raw.splitlines():
        is_item = bool(_LIST_ITEM.match(line))
        rendered = " ".join(render_inline(_LIST_ITEM.sub("", line) if is_item else line).split())
        if not rendered:
            continue
        if is_item:
            out.append("- " + rendered)
        elif out and not out[-1].startswith("- "):
            out[-1] += " " + rendered
        else:
            out.append(rendered)
    return "\n".join(out)


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


def _heading_text(raw: str) -> str:
    return " ".join(render_inline(raw).split()).strip()


def parse_markdown(text: str) -> ParsedDocument:
    """Split a markdown document into sections (ATX headings and bold-only lines) holding blocks."""
    front, body_start = parse_front_matter(text)
    slugger = _Slugger()
    preamble = Section(title="", level=0, heading_path=[], anchor="", line=0)
    sections: list[Section] = [preamble]
    stack: list[Section] = []  # open headings, outermost first

    lines = text.splitlines(keepends=True)
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    first_line = text.count("\n", 0, body_start)  # index of the first body line

    block_lines: list[int] = []  # indices of lines in the current block
    in_fence: str | None = None

    def flush() -> None:
        if not block_lines:
            return
        i0, i1 = block_lines[0], block_lines[-1]
        start = offsets[i0]
        end = offsets[i1] + len(lines[i1].rstrip("\r\n"))
        raw = text[start:end]
        # trim leading/trailing whitespace so the span starts and ends on content
        lead = len(raw) - len(raw.lstrip())
        trail = len(raw) - len(raw.rstrip())
        start, end = start + lead, end - trail
        raw = text[start:end]
        rendered = render_block(raw)
        block_lines.clear()
        if not raw:
            return
        sections[-1].blocks.append(
            Block(start, end, text.count("\n", 0, start) + 1, text.count("\n", 0, end) + 1, raw, rendered)
        )

    def open_section(title: str, level: int, line_no: int) -> None:
        while stack and stack[-1].level >= level:
            stack.pop()
        path = [s.title for s in stack] + [title]
        sec = Section(title=title, level=level, heading_path=path, anchor=slugger.unique(title), line=line_no)
        stack.append(sec)
        sections.append(sec)

    for i in range(first_line, len(lines)):
        line = lines[i].rstrip("\r\n")
        fence = _FENCE.match(line)
        if in_fence:
            block_lines.append(i)
            if fence and fence.group(1)[0] == in_fence[0] and len(fence.group(1)) >= len(in_fence):
                in_fence = None
                flush()
            continue
        if fence:
            flush()
            in_fence = fence.group(1)
            block_lines.append(i)
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            title = _heading_text(atx.group(2))
            if title:
                open_section(title, len(atx.group(1)), i + 1)
            continue
        bold = _BOLD_ONLY.match(line)
        if bold:
            flush()
            title = _heading_text(bold.group("a") or bold.group("b"))
            # A bold line repeating the heading it sits under adds no level.
            if title and not (stack and stack[-1].title.lower() == title.lower() and not stack[-1].blocks):
                open_section(title, 7, i + 1)
            continue
        if not line.strip():
            flush()
            continue
        block_lines.append(i)
    flush()

    return ParsedDocument(metadata=front, sections=[s for s in sections if s.level or s.blocks])
