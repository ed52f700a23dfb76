"""The index directory: the one format the indexer writes and the service reads.

    <index>/manifest.json     schema and package version, model, chunker settings, corpus hashes,
                              file checksums, counts, warnings, build time
    <index>/chunks.jsonl      one chunk a line (text, citation fields, tokens, embed_text)
    <index>/documents.json    document metadata
    <index>/dense.faiss       FAISS inner-product index over unit-normalized chunk vectors (row i = chunk i)
    <index>/sentences.npy     unit-normalized vectors of every chunk's sentences, in chunk order; each chunk
                              lists its sentence spans (into its text) under "sentences"
    <index>/lexical/          bm25s index over analyzed chunk text (row i = chunk i)

The directory is written under a temporary name beside the target and renamed into place only when every
file is complete, so a reader never sees a half-written index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
DOCUMENTS = "documents.json"
DENSE = "dense.faiss"
SENTENCES = "sentences.npy"
LEXICAL = "lexical"

REBUILD_HINT = "rebuild it with: python -m indexer build --corpus corpus --out {path} (or `make index`)"


class IndexLoadError(Exception):
    """The index directory is missing, incomplete, corrupt or incompatible."""


class IndexNotFound(IndexLoadError):
    pass


class IndexIncompatible(IndexLoadError):
    pass


@dataclass
class IndexData:
    path: Path
    manifest: dict
    chunks: list[dict]
    documents: dict[str, dict]
    dense: object  # faiss.Index
    lexical: object  # bm25s.BM25
    sentence_vectors: np.ndarray  # (n_sentences, dim)

    @property
    def version(self) -> str:
        return self.manifest["index_version"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksums(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def index_version(built_at: float, corpus_hashes: dict[str, str]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(built_at))
    digest = hashlib.sha1(json.dumps(corpus_hashes, sort_keys=True).encode()).hexdigest()[:6]
    return f"{stamp}-{digest}"


def write_index(
    out: Path,
    chunks: list[dict],
    documents: dict[str, dict],
    embeddings: np.ndarray,
    lexical,
    manifest: dict,
    sentence_vectors: np.ndarray,
) -> Path:
    """Write every file to a temporary directory beside `out`, then rename it into place."""
    import faiss

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with open(tmp / CHUNKS, "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        (tmp / DOCUMENTS).write_text(json.dumps(documents, ensure_ascii=False, indent=1), encoding="utf-8")
        index = faiss.IndexFlatIP(embeddings.shape[1])
        if len(embeddings):
            index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        faiss.write_index(index, str(tmp / DENSE))
        np.save(tmp / SENTENCES, np.ascontiguousarray(sentence_vectors, dtype=np.float32))
        lexical.save(str(tmp / LEXICAL), show_progress=False)
        manifest = dict(manifest)
        manifest["schema_version"] = SCHEMA_VERSION
        manifest["package_version"] = __version__
        manifest["files"] = _checksums(tmp)
        manifest.setdefault("counts", {})["chunks"] = len(chunks)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{int(time.time())}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise IndexNotFound(f"no index at {path} (no {MANIFEST}); " + REBUILD_HINT.format(path=path))
    try:
        return json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexLoadError(f"{mf} is not valid JSON ({e}); " + REBUILD_HINT.format(path=path)) from e


def check_compatible(manifest: dict, path: Path, model_name: str | None, dim: int | None) -> None:
    hint = REBUILD_HINT.format(path=path)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IndexIncompatible(
            f"index at {path} has schema version {manifest.get('schema_version')}, this service reads "
            f"version {SCHEMA_VERSION}; {hint}"
        )
    model = manifest.get("model", {})
    if model_name is not None and model.get("name") != model_name:
        raise IndexIncompatible(
            f"index at {path} was built with the model {model.get('name')!r}, the service uses {model_name!r}; {hint}"
        )
    if dim is not None and model.get("dim") != dim:
        raise IndexIncompatible(f"index at {path} has {model.get('dim')}-d vectors, the model gives {dim}; {hint}")


def load_index(path: Path, model_name: str | None = None, dim: int | None = None, verify: bool = True) -> IndexData:
    """Load an index directory, refusing one that is incomplete, corrupt or built for another model."""
    import faiss

    from indexer.lexical import _bm25s

    bm25s = _bm25s()
    path = Path(path)
    manifest = read_manifest(path)
    check_compatible(manifest, path, model_name, dim)
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            p = path / rel
            if not p.is_file() or sha256_file(p) != digest:
                raise IndexLoadError(f"index file {p} is missing or does not match its checksum; "
                                  + REBUILD_HINT.format(path=path))
    with open(path / CHUNKS, encoding="utf-8") as f:
        chunks = [json.loads(line) for line in f if line.strip()]
    documents = json.loads((path / DOCUMENTS).read_text(encoding="utf-8"))
    dense = faiss.read_index(str(path / DENSE))
    lexical = bm25s.BM25.load(str(path / LEXICAL), show_progress=False, verbosity=0)
    sentence_vectors = np.load(path / SENTENCES)
    n_sent = sum(len(c["sentences"]) for c in chunks)
    if dense.ntotal != len(chunks) or sentence_vectors.shape[0] != n_sent:
        raise IndexLoadError(f"index at {path}: {dense.ntotal} vectors for {len(chunks)} chunks, "
                             f"{sentence_vectors.shape[0]} for {n_sent} sentences; " + REBUILD_HINT.format(path=path))
    return IndexData(path=path, manifest=manifest, chunks=chunks, documents=documents, dense=dense, lexical=lexical,
                     sentence_vectors=sentence_vectors)
