"""Build a new index version from a corpus directory: the indexer's one entry point for code and CLI."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from indexer.chunking import (
    ChunkingConfig,
    Counters,
    DocumentChunks,
    chunk_markdown,
    chunk_record,
    embed_text_for,
)
from indexer.embed import Embedder, VectorCache, encode_cached
from indexer.lexical import build_lexical, lexical_settings
from indexer.store import (
    DEFAULT_KEEP,
    IndexLoadError,
    index_version,
    load_index,
    resolve,
    sha256_file,
    write_version,
)
from indexer.text import sentence_as_read, sentence_spans
from indexer.tokens import count_tokens

log = logging.getLogger(__name__)

MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}


class CorpusError(Exception):
    """The corpus cannot be indexed as it is (missing, empty, malformed)."""


@dataclass
class BuildSummary:
    out: str
    documents: int
    sections: int
    chunks: int
    tokens: int
    mean_chunk_tokens: float
    max_chunk_pieces: int
    model_limit: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    index_version: str = ""
    activated: bool = True

    def to_text(self) -> str:
        lines = [
            f"index      {self.out}  (version {self.index_version}"
            f"{', now CURRENT' if self.activated else '; CURRENT not switched'})",
            f"documents  {self.documents}",
            f"sections   {self.sections}",
            f"chunks     {self.chunks}  (mean {self.mean_chunk_tokens:.1f} cl100k tokens)",
            f"tokens     {self.tokens}",
            f"pieces     longest chunk {self.max_chunk_pieces} of the model's {self.model_limit}; 0 truncated",
            f"warnings   {len(self.warnings)}",
        ]
        lines += [f"  - {w}" for w in self.warnings[:15]]
        if len(self.warnings) > 15:
            lines.append(f"  … and {len(self.warnings) - 15} more (see manifest.json)")
        lines.append(f"seconds    {self.seconds:.1f}")
        return "\n".join(lines)


def corpus_files(corpus: Path) -> list[Path]:
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise CorpusError(f"corpus directory {corpus} does not exist")
    files = sorted(
        p for p in corpus.rglob("*")
        if p.is_file() and p.suffix.lower() in MARKDOWN_SUFFIXES | JSONL_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise CorpusError(f"no .md or .jsonl files in {corpus}")
    return files


def _jsonl_documents(path: Path, counters: Counters, config: ChunkingConfig) -> list[DocumentChunks]:
    docs = []
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            start, end = offset, offset + len(raw.rstrip(b"\r\n"))
            offset += len(raw)
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict) or not (rec.get("id") or rec.get("_id")):
                raise CorpusError(f'{path}:{line_no}: a record needs an "id" (or "_id") and "text"')
            docs.append(chunk_record(rec, line_no, start, end, counters, config))
    return docs


def load_corpus(corpus: Path, counters: Counters, config: ChunkingConfig) -> tuple[list[DocumentChunks], dict]:
    """Parse and chunk every document; returns the documents and the corpus file hashes."""
    corpus = Path(corpus)
    docs: list[DocumentChunks] = []
    hashes = {}
    for path in corpus_files(corpus):
        rel = path.relative_to(corpus).as_posix()
        hashes[rel] = sha256_file(path)
        if path.suffix.lower() in JSONL_SUFFIXES:
            for d in _jsonl_documents(path, counters, config):
                d.source = rel
                docs.append(d)
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path} is not UTF-8 text") from e
            doc_id = path.relative_to(corpus).with_suffix("").as_posix()
            d = chunk_markdown(doc_id, text, counters, config)
            d.source = rel
            docs.append(d)
    seen: set[str] = set()
    for d in docs:
        if d.doc_id in seen:
            raise CorpusError(f"document id {d.doc_id!r} occurs twice in the corpus")
        seen.add(d.doc_id)
    return docs, hashes


def lexical_text(chunk: dict) -> str:
    """What BM25 indexes for a chunk: its heading path (once) and its text."""
    return chunk["embed_text"]


def sentence_texts_of(chunk: dict) -> list[str]:
    """What the model embeds for each sentence of a chunk: its heading path and the sentence (as read:
    text.sentence_as_read)."""
    return [embed_text_for(chunk["heading_path"], sentence_as_read(chunk, a, b)) for a, b in chunk["sentences"]]


def previous_vectors(out: Path, embedder: Embedder) -> VectorCache | None:
    """The chunk and sentence vectors of the version `out`'s CURRENT names, keyed by text, when it was built
    with this model and loads; None otherwise (everything is embedded)."""
    try:
        _, vdir = resolve(Path(out))
        prev = load_index(vdir, model_name=embedder.name, dim=embedder.dim, verify=False)
    except IndexLoadError as e:
        if Path(out).exists():
            log.info("no vectors reused from %s: %s", out, str(e).split(";")[0])
        return None
    cache = VectorCache(embedder.name, embedder.dim)
    from indexer.vectors import flat_view

    chunk_texts: list[str] = []
    sent_texts: list[str] = []
    for c in prev.chunks:
        chunk_texts.append(c["embed_text"])
        sent_texts += sentence_texts_of(c)
    rows = prev.chunk_vectors if prev.chunk_vectors is not None else flat_view(prev.dense)
    cache.add(chunk_texts, np.array(rows, dtype=np.float32))
    cache.add(sent_texts, np.asarray(prev.sentence_vectors))
    cache.source = prev.version
    return cache


def build_index(
    corpus: Path,
    out: Path,
    embedder: Embedder,
    config: ChunkingConfig | None = None,
    progress: bool = False,
    batch_size: int = 32,
    keep: int = DEFAULT_KEEP,
    activate: bool = True,
    reuse: bool = True,
) -> BuildSummary:
    """Write a new version under the index root `out` (`out/versions/<version>/`) and, when `activate`,
    point `out/CURRENT` at it; versions beyond the newest `keep` are pruned (never the current one).

    With `reuse`, vectors of chunks and sentences whose text is unchanged since the current version (same
    model) are taken from it instead of embedded again; the manifest's "embedding" says how many."""
    t0 = time.time()
    config = config or ChunkingConfig(max_pieces=embedder.max_pieces)
    if config.max_pieces > embedder.max_pieces:
        raise CorpusError(f"max_pieces {config.max_pieces} exceeds the model's limit {embedder.max_pieces}")
    counters = Counters(tokens=count_tokens, pieces=embedder.count_pieces)
    docs, hashes = load_corpus(corpus, counters, config)
    chunks = [c.to_dict() for d in docs for c in d.chunks]
    if not chunks:
        raise CorpusError(f"nothing to index in {corpus}: every section was empty or a placeholder")
    warnings = [w for d in docs for w in d.warnings]
    for w in warnings:
        log.warning(w)

    pieces = [embedder.count_pieces(c["embed_text"]) for c in chunks]
    if max(pieces) > embedder.max_pieces:  # the chunker guarantees this; never index a truncated chunk
        raise CorpusError(f"a chunk has {max(pieces)} word pieces, over the model limit {embedder.max_pieces}")
    sentence_texts: list[str] = []
    for c in chunks:
        c["sentences"] = sentence_spans(c["text"]) or [(0, len(c["text"]))]
        sentence_texts += sentence_texts_of(c)
    cache = previous_vectors(Path(out), embedder) if reuse else None
    embeddings, reused = encode_cached(embedder, [c["embed_text"] for c in chunks] + sentence_texts, cache,
                                       batch_size=batch_size, progress=progress)
    reused_from = cache.source if cache is not None else None
    del cache
    embeddings, sentence_vectors = embeddings[: len(chunks)], embeddings[len(chunks):]
    n_reused_chunks, n_reused_sent = int(reused[: len(chunks)].sum()), int(reused[len(chunks):].sum())
    lexical = build_lexical([lexical_text(c) for c in chunks], bigrams=config.lexical_bigrams)

    built_at = time.time()
    version = index_version(built_at, hashes)
    documents = {
        d.doc_id: {"doc_id": d.doc_id, "title": d.title, "url": d.url, "description": d.description,
                   "source": d.source, "sections": d.sections, "chunks": len(d.chunks)}
        for d in docs
    }
    total_tokens = int(sum(c["tokens"] for c in chunks))
    summary = BuildSummary(
        out=str(out),
        documents=len(docs),
        sections=sum(d.sections for d in docs),
        chunks=len(chunks),
        tokens=total_tokens,
        mean_chunk_tokens=total_tokens / len(chunks),
        max_chunk_pieces=max(pieces),
        model_limit=embedder.max_pieces,
        warnings=warnings,
        index_version=version,
    )
    manifest = {
        "index_version": version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built_at)),
        "built_at_unix": built_at,
        "model": {"name": embedder.name, "dim": int(embedder.dim), "max_pieces": int(embedder.max_pieces),
                  "normalized": True, "device": "cpu"},
        "chunker": asdict(config),
        "lexical": lexical_settings(config.lexical_bigrams),
        "corpus": {"path": str(corpus), "files": hashes},
        "counts": {"documents": summary.documents, "sections": summary.sections, "chunks": len(chunks),
                   "sentences": len(sentence_texts),
                   "tokens": total_tokens, "warnings": len(warnings), "truncated_chunks": 0,
                   "max_chunk_pieces": summary.max_chunk_pieces},
        "warnings": warnings,
        "embedding": {
            "cache": "reused vectors of unchanged texts (sha256 of the text, same model) from the previous version",
            "reused_from": reused_from,
            "chunks": {"reused": n_reused_chunks, "embedded": len(chunks) - n_reused_chunks},
            "sentences": {"reused": n_reused_sent, "embedded": len(sentence_texts) - n_reused_sent},
        },
    }
    summary.seconds = time.time() - t0
    manifest["build_seconds"] = round(summary.seconds, 2)
    vdir = write_version(Path(out), chunks, documents, np.asarray(embeddings, dtype=np.float32), lexical,
                         manifest, sentence_vectors=np.asarray(sentence_vectors, dtype=np.float32),
                         activate=activate, keep=keep)
    summary.activated = activate
    summary.index_version = vdir.name  # a suffix is added when a version of that name exists already
    return summary
