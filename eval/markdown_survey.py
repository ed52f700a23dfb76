"""Parse and chunk markdown files written by others, and check every chunk's citation.

`python -m eval.markdown_survey [ROOT ...] [--limit N] [--show N]` (default roots: the `.md` files shipped by
the installed Python packages and by Debian packages under /usr/share/doc; `.md.gz` are decompressed).

For each file: no exception while parsing and chunking; for each chunk, its source span
(`char_start`/`char_end`) is non-empty, starts and ends on content, its lines agree with the offsets, and the
chunk's words appear in it in order (keeping only the span's word characters, so that markup inside a word
is no gap; the span read as written, without the tags the parser drops, or that with HTML entities
decoded); and the document's anchors are unique. Counting uses cheap counters (words as tokens, the fake
embedder's word pieces), so no model is needed. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import gzip
import html
import json
import re
import sys
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from indexer.chunking import ChunkingConfig, Counters, DocumentChunks, chunk_markdown
from indexer.embed import FakeEmbedder
from indexer.markdown import LineIndex, parse_markdown, strip_dropped_tags

SUFFIXES = (".md", ".markdown", ".md.gz", ".markdown.gz")
_WORD = re.compile(r"\w+")


def default_roots() -> list[Path]:
    return [Path(sysconfig.get_paths()["purelib"]), Path("/usr/share/doc")]


def markdown_files(roots: list[Path]) -> list[Path]:
    out: set[Path] = set()
    for root in roots:
        if root.is_file():
            out.add(root)
        elif root.is_dir():
            out.update(p for p in root.rglob("*") if p.name.lower().endswith(SUFFIXES) and p.is_file())
    return sorted(out)


def read_markdown(path: Path) -> str:
    """The file's text (decompressed when .gz); UnicodeDecodeError when it is not UTF-8."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


def check_chunks(source: str, doc: DocumentChunks) -> list[str]:
    """What is wrong with the chunks' citations of `source` (empty when nothing is)."""
    problems: list[str] = []
    lines = LineIndex(source)
    for c in doc.chunks:
        where = f"chunk {c.ordinal} (lines {c.line_start}-{c.line_end})"
        if not c.text.strip():
            problems.append(f"{where}: empty text")
            continue
        if not 0 <= c.char_start < c.char_end <= len(source):
            problems.append(f"{where}: offsets {c.char_start}..{c.char_end} outside the source")
            continue
        span = source[c.char_start : c.char_end]
        if span != span.strip():
            problems.append(f"{where}: the span starts or ends with white space")
        if (lines.line_of(c.char_start), lines.line_of(c.char_end)) != (c.line_start, c.line_end):
            problems.append(f"{where}: lines {c.line_start}-{c.line_end} disagree with the offsets")
        # the span's word characters only, so that markup between the parts of a word (`Buffer`s) is no gap
        # read three ways: as written, without the tags the parser drops, and that with entities decoded
        bare = strip_dropped_tags(span)
        streams = ["".join(_WORD.findall(x)) for x in (span, bare, html.unescape(bare))]
        pos = [0, 0, 0]
        for w in _WORD.findall(c.text):
            found = [st.find(w, p) for st, p in zip(streams, pos, strict=True)]
            if max(found) < 0:
                problems.append(f"{where}: {w!r} is not in the cited span (in order)")
                break
            pos = [f + len(w) if f >= 0 else p for f, p in zip(found, pos, strict=True)]
    return problems


def check_anchors(source: str) -> list[str]:
    anchors = [s.anchor for s in parse_markdown(source).sections if s.level]
    dup = [a for a, n in Counter(anchors).items() if n > 1]
    return [f"anchor {a!r} is not unique" for a in dup]


@dataclass
class SurveyResult:
    tried: int = 0
    failed: int = 0
    skipped_not_utf8: int = 0
    crashed: int = 0
    chunks: int = 0
    sections: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: dict[str, list[str]] = field(default_factory=dict)

    def figures(self) -> dict:
        return {"files_tried": self.tried, "files_failed": self.failed, "crashed": self.crashed,
                "skipped_not_utf8": self.skipped_not_utf8, "chunks_checked": self.chunks,
                "sections": self.sections, "megabytes": round(self.bytes / 1e6, 2),
                "seconds": round(self.seconds, 1)}


def survey(files: list[Path], config: ChunkingConfig | None = None) -> SurveyResult:
    fake = FakeEmbedder()
    counters = Counters(tokens=lambda s: len(s.split()), pieces=fake.count_pieces)
    config = config or ChunkingConfig(max_pieces=fake.max_pieces)
    res = SurveyResult()
    t0 = time.perf_counter()
    for path in files:
        try:
            source = read_markdown(path)
        except (UnicodeDecodeError, OSError, EOFError, gzip.BadGzipFile):
            res.skipped_not_utf8 += 1
            continue
        res.tried += 1
        res.bytes += len(source.encode("utf-8"))
        try:
            doc = chunk_markdown(path.stem, source, counters, config)
            problems = check_chunks(source, doc) + check_anchors(source)
        except Exception as e:  # the survey is looking for exactly these
            res.crashed += 1
            problems = [f"crashed: {type(e).__name__}: {e}"]
            doc = None
        if doc is not None:
            res.chunks += len(doc.chunks)
            res.sections += doc.sections
        if problems:
            res.failed += 1
            res.failures[str(path)] = problems
    res.seconds = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.markdown_survey", description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", type=Path, help="files or directories (default: site-packages, /usr/share/doc)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many files (0: all)")
    ap.add_argument("--show", type=int, default=20, help="failures to print")
    args = ap.parse_args(argv)
    files = markdown_files(args.roots or default_roots())
    if args.limit:
        files = files[: args.limit]
    res = survey(files)
    print(f"files tried {res.tried}, failed {res.failed} (crashed {res.crashed}), "
          f"skipped (not UTF-8) {res.skipped_not_utf8}; {res.chunks} chunks in {res.sections} sections checked, "
          f"{res.bytes / 1e6:.1f} MB in {res.seconds:.1f} s")
    for path, problems in list(res.failures.items())[: args.show]:
        print(f"- {path}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    print(json.dumps(res.figures()))
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
