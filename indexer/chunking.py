"""Chunking: sections → passages that fit the embedding model, with stable ids and precise citations.

Pure: takes the source text and token counters, reads no files.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from indexer.markdown import Block, LineIndex, Section, document_metadata, parse_markdown
from indexer.text import sentence_spans, word_set

PLACEHOLDER = re.compile(
    r"^\s*(content needed|tbd|todo|coming soon|lorem ipsum.*|placeholder|xxx+|n/?a)\s*\.?\s*$", re.I)


@dataclass(frozen=True)
class ChunkingConfig:
    target_tokens: int = 170  # cl100k tokens a chunk aims at (chosen by measurement, see README)
    max_pieces: int = 256  # the embedding model's limit, special tokens included
    min_section_words: int = 4  # fewer words than this (and no number) is a stray fragment
    dedup_jaccard: float = 0.5  # paragraphs this similar to an earlier one are not indexed again
    dedup_min_words: int = 20
    strategy: str = "section"  # "section": pack paragraphs of a section; "paragraph": one paragraph a chunk
    headings_in_embedding: bool = True  # prepend the heading path to the text the model embeds
    lexical_bigrams: bool = True  # BM25 also indexes pairs of neighbouring terms
    bylines: bool = True  # a section's byline (markdown._is_byline) is recorded on its chunks, read "Written by …"


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    doc_title: str
    section: str
    heading_path: list[str]
    anchor: str
    url: str | None
    line_start: int
    line_end: int
    char_start: int
    char_end: int
    text: str
    tokens: int
    embed_text: str
    ordinal: int = 0  # position of the chunk in its document
    section_index: int = 0  # position of its section in the document
    byline: str | None = None  # the section's byline, whose sentence the models read as "Written by <byline>"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Counters:
    """Token counters: cl100k tokens (what clients pay for) and model word pieces (what the model sees)."""

    tokens: Callable[[str], int]
    pieces: Callable[[str], int]


@dataclass
class _Unit:
    start: int  # source offsets
    end: int
    text: str
    block: int  # index of the block it came from
    tokens: int = 0
    ta: int = 0  # where `text` starts in the rendered text of its block
    sep: str = " "  # what joins it to the unit before it when both come from one block ("\n": a new line)


@dataclass
class DocumentChunks:
    doc_id: str
    title: str
    url: str | None
    description: str | None
    chunks: list[Chunk] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sections: int = 0
    source: str | None = None  # path of the corpus file, relative to the corpus directory


class _Paragraphs:
    """The paragraphs of a document seen so far, for near-duplicate detection (word-set Jaccard).

    An inverted index (word -> paragraphs holding it) counts the words a new paragraph shares with each
    earlier one, so only paragraphs sharing a word are looked at, instead of comparing with every one."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.sizes: list[int] = []
        self.lines: list[int] = []
        self.postings: dict[str, list[int]] = {}

    def first_similar(self, words: set[str]) -> int | None:
        """Line of the earliest paragraph whose Jaccard similarity with `words` is at least the threshold."""
        shared: dict[int, int] = {}
        for w in words:
            for i in self.postings.get(w, ()):
                shared[i] = shared.get(i, 0) + 1
        hits = [i for i, n in shared.items() if n / max(1, len(words) + self.sizes[i] - n) >= self.threshold]
        return self.lines[min(hits)] if hits else None

    def add(self, words: set[str], line: int) -> None:
        i = len(self.sizes)
        self.sizes.append(len(words))
        self.lines.append(line)
        for w in words:
            self.postings.setdefault(w, []).append(i)


def chunk_id(doc_id: str, heading_path: list[str], text: str) -> str:
    h = hashlib.sha1("\x1f".join([doc_id, " > ".join(heading_path), text]).encode("utf-8"))
    return h.hexdigest()[:16]


def _fit_path(path: list[str], counters: Counters, budget: int) -> list[str]:
    """The heading path prepended to a chunk for embedding, within `budget` word pieces so the text always has
    room: outer headings are dropped first, then the innermost one is cut at a word and marked with "…". Only
    the embedded context is shortened; the chunk's text and its `heading_path` are kept whole."""
    path = list(path)
    while len(path) > 1 and counters.pieces(embed_text_for(path, "")) > budget:
        path = path[1:]
    if path and counters.pieces(embed_text_for(path, "")) > budget:
        words = path[-1].split()
        while words and counters.pieces(embed_text_for([" ".join(words) + " …"], "")) > budget:
            words = words[:-1]
        path = [" ".join(words) + " …"] if words else []
    return path


def _unique_ids(chunks: list[Chunk]) -> None:
    """The same text twice under one heading (a paragraph repeated word for word, split into two chunks) gets
    ids that differ by its occurrence; the first keeps the plain hash, so ids stay stable."""
    seen: dict[str, int] = {}
    for c in chunks:
        n = seen.get(c.chunk_id, 0)
        seen[c.chunk_id] = n + 1
        if n:
            c.chunk_id = hashlib.sha1(f"{c.chunk_id}\x1f{n}".encode()).hexdigest()[:16]


def embed_text_for(heading_path: list[str], text: str) -> str:
    return (" > ".join(heading_path) + "\n" + text) if heading_path else text


def _split_block(block: Block, index: int) -> list[_Unit]:
    """A block as sentence units (list items, table rows and lines count as sentences), in source coordinates."""
    units = []
    prev = 0
    for a, b in sentence_spans(block.text):
        start, end = block.source_span(a, b)
        units.append(_Unit(start, end, block.text[a:b], index, ta=a,
                           sep="\n" if "\n" in block.text[prev:a] else " "))
        prev = b
    return units


def _split_words(unit: _Unit, fits: Callable[[str], bool],
                 to_source: Callable[[int, int], tuple[int, int]]) -> list[_Unit]:
    """Last resort for a single sentence longer than the model limit: split between words.

    `to_source` maps a span of `unit.text` to source offsets."""
    text = unit.text
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    out: list[_Unit] = []
    i = 0
    while i < len(words):
        j = i + 1
        while j < len(words) and fits(text[words[i][0] : words[j][1]]):
            j += 1
        a, b = words[i][0], words[j - 1][1]
        start, end = to_source(a, b)
        out.append(_Unit(start, end, text[a:b], unit.block, ta=unit.ta + a, sep=unit.sep if not out else " "))
        i = j
    return out


def _join(units: list[_Unit]) -> str:
    parts: list[str] = []
    for i, u in enumerate(units):
        if i and u.block == units[i - 1].block:
            parts.append(u.sep + u.text)
        else:
            parts.append(("\n\n" if i else "") + u.text)
    return "".join(parts)


def _pack(units: list[_Unit], target: int, fits: Callable[[list[_Unit]], bool]) -> list[list[_Unit]]:
    """Group consecutive units into chunks of about equal size near `target` tokens.

    The number of chunks is fixed first (ceil(total / target)); each chunk then takes units while that
    brings it closer to an equal share of what is left. A unit ending in ':' (a label) stays with the next.
    """
    total = sum(u.tokens for u in units)
    remaining_chunks = max(1, math.ceil(total / target))
    groups: list[list[_Unit]] = []
    cur: list[_Unit] = []
    cur_tokens = 0
    remaining = total
    for _i, u in enumerate(units):
        goal = remaining / max(1, remaining_chunks)
        label_before = bool(cur) and cur[-1].text.rstrip().endswith(":")
        closer = abs(cur_tokens + u.tokens - goal) <= abs(cur_tokens - goal)
        if cur and (not fits(cur + [u]) or (not closer and not label_before)):
            groups.append(cur)
            remaining -= cur_tokens
            remaining_chunks = max(1, remaining_chunks - 1)
            cur, cur_tokens = [], 0
        cur.append(u)
        cur_tokens += u.tokens
    if cur:
        groups.append(cur)
    return groups


def _is_placeholder(text: str, min_words: int) -> bool:
    words = text.split()
    if PLACEHOLDER.match(text):
        return True
    return len(words) < min_words and not any(ch.isdigit() for ch in text)


def chunk_markdown(doc_id: str, source: str, counters: Counters, config: ChunkingConfig) -> DocumentChunks:
    """Parse a markdown document and cut it into chunks; warnings say what was left out and why."""
    parsed = parse_markdown(source)
    lines = LineIndex(source)
    meta = document_metadata(parsed.metadata)
    title = meta["title"] or doc_id
    out = DocumentChunks(doc_id=doc_id, title=title, url=meta["url"], description=meta["description"])
    seen_paragraphs = _Paragraphs(config.dedup_jaccard)

    for s_index, section in enumerate(parsed.sections):
        blocks = [b for b in section.blocks if b.text]
        content = " ".join(b.text for b in blocks)
        where = f"'{section.title or '(before the first heading)'}' (line {section.line or 1})"
        if not blocks:
            if section.level and not any(
                other.heading_path[: len(section.heading_path)] == section.heading_path and other is not section
                for other in parsed.sections
            ):
                out.warnings.append(f"{doc_id}: section {where} is empty; not indexed")
            continue
        if _is_placeholder(content, config.min_section_words):
            out.warnings.append(f"{doc_id}: section {where} has no real content ({content[:40]!r}); not indexed")
            continue
        out.sections += 1
        _chunk_section(doc_id, source, section, s_index, blocks, out, seen_paragraphs, counters, config, lines)

    _unique_ids(out.chunks)
    for i, c in enumerate(out.chunks):
        c.ordinal = i
    return out


def _chunk_section(
    doc_id: str,
    source: str,
    section: Section,
    s_index: int,
    blocks: list[Block],
    out: DocumentChunks,
    seen: _Paragraphs,
    counters: Counters,
    config: ChunkingConfig,
    lines: LineIndex,
) -> None:
    prefix_path = section.heading_path
    embed_path = _fit_path(prefix_path, counters, config.max_pieces // 2) if config.headings_in_embedding else []

    def fits_text(text: str) -> bool:
        return counters.pieces(embed_text_for(embed_path, text)) <= config.max_pieces

    # Runs of blocks between dropped duplicates are packed separately, so a citation span never covers
    # text that is not in the chunk.
    runs: list[list[_Unit]] = [[]]
    for bi, block in enumerate(blocks):
        words = word_set(block.text)
        if len(block.text.split()) >= config.dedup_min_words:
            dup = seen.first_similar(words)
            if dup is not None:
                out.warnings.append(
                    f"{doc_id}: paragraph at line {block.line_start} repeats the one at line {dup}; not indexed"
                )
                runs.append([])
                continue
            seen.add(words, block.line_start)
        if config.strategy == "paragraph" and runs[-1]:
            runs.append([])
        whole = _Unit(block.char_start, block.char_end, block.text, bi)
        whole.tokens = counters.tokens(whole.text)
        if whole.tokens <= config.target_tokens and fits_text(whole.text):
            runs[-1].append(whole)
            continue
        for u in _split_block(block, bi):
            pieces = [u] if fits_text(u.text) else _split_words(
                u, fits_text, lambda x, y, b=block, ta=u.ta: b.source_span(ta + x, ta + y))
            if len(pieces) > 1:
                out.warnings.append(
                    f"{doc_id}: a sentence at line {lines.line_of(u.start)} is longer than the model limit; "
                    "split between words"
                )
            for p in pieces:
                p.tokens = counters.tokens(p.text)
                runs[-1].append(p)

    for run in runs:
        if not run:
            continue
        target = config.target_tokens if config.strategy == "section" else 10**9
        for group in _pack(run, target, lambda us: fits_text(_join(us))):
            text = _join(group)
            start, end = group[0].start, group[-1].end
            out.chunks.append(
                Chunk(
                    chunk_id=chunk_id(doc_id, prefix_path, text),
                    doc_id=doc_id,
                    doc_title=out.title,
                    section=section.title,
                    heading_path=list(prefix_path),
                    anchor=section.anchor,
                    url=(f"{out.url}#{section.anchor}" if out.url and section.anchor else out.url),
                    line_start=lines.line_of(start),
                    line_end=lines.line_of(end),
                    char_start=start,
                    char_end=end,
                    text=text,
                    tokens=counters.tokens(text),
                    embed_text=embed_text_for(embed_path, text),
                    section_index=s_index,
                    byline=section.byline if config.bylines else None,
                )
            )


def chunk_record(
    record: dict, line_no: int, char_start: int, char_end: int, counters: Counters, config: ChunkingConfig
) -> DocumentChunks:
    """A JSONL record ({"id"|"_id", "title", "text", "url"?}) as one document of one section.

    Long texts are split at sentence boundaries to fit the model; the citation is the record's line.
    """
    doc_id = str(record.get("id") or record.get("_id"))
    title = str(record.get("title") or "").strip()
    text = " ".join(str(record.get("text") or "").split())
    url = record.get("url")
    out = DocumentChunks(doc_id=doc_id, title=title or doc_id, url=url, description=None, sections=1)
    if not text and not title:
        out.warnings.append(f"record {doc_id} (line {line_no}) has no text; not indexed")
        out.sections = 0
        return out
    path = [title] if title else []

    def fits(t: str) -> bool:
        return counters.pieces(embed_text_for(path, t)) <= config.max_pieces

    units = [_Unit(a, b, text[a:b], 0) for a, b in sentence_spans(text)] or [_Unit(0, len(text), text, 0)]
    expanded: list[_Unit] = []
    for u in units:
        expanded.extend([u] if fits(u.text) else _split_words(u, fits, lambda x, y, s=u.start: (s + x, s + y)))
    # as few chunks as fit the model, of about equal size (not one full chunk and a scrap)
    for u in expanded:
        u.tokens = counters.pieces(u.text)
    groups = _pack(expanded, max(1, config.max_pieces - counters.pieces(title) - 4),
                   lambda us: fits(text[us[0].start : us[-1].end]))
    for g in groups:
        body = text[g[0].start : g[-1].end]
        out.chunks.append(
            Chunk(
                chunk_id=chunk_id(doc_id, path, body),
                doc_id=doc_id,
                doc_title=out.title,
                section=title,
                heading_path=path,
                anchor="",
                url=url,
                line_start=line_no,
                line_end=line_no,
                char_start=char_start,
                char_end=char_end,
                text=body,
                tokens=counters.tokens(body),
                embed_text=embed_text_for(path, body).replace("\n", " ", 1),
            )
        )
    _unique_ids(out.chunks)
    for i, c in enumerate(out.chunks):
        c.ordinal = i
    return out
