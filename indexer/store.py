"""The index root: the one format the indexer writes and the service reads.

    <root>/CURRENT                the name of the version to serve, one line; replaced atomically
    <root>/versions/<version>/    one complete index (below); never modified once it has its name
    <root>/versions/.tmp-*        a version being written (left over if a build died; removed by the next build)
    <root>/versions/.del-*        a version being pruned (likewise)
    <root>/.CURRENT.tmp-*         a pointer being written (likewise)
    <root>/.build.lock            held (flock) by the build or rollback working on this root

A version directory:

    manifest.json     schema and package version, model, chunker settings, corpus hashes, file checksums,
                      counts, warnings, build time, its own version name
    chunks.jsonl      one chunk a line (text, citation fields, tokens, embed_text, sentence spans)
    documents.json    document metadata
    dense.faiss       FAISS inner-product index over unit-normalized chunk vectors (row i = chunk i)
    sentences.npy     unit-normalized vectors of every chunk's sentences, in chunk order (float32; float16 from
                      indexer.vectors.SENTENCE_FP16_MIN_ROWS chunks on); each chunk lists its sentence spans
                      (into its text) under "sentences"
    chunk_vectors.npy only with an IVF dense index (which keeps its vectors by list, not by row): the chunk
                      vectors, float32, row i = chunk i; required at load whenever dense.faiss is an IVF index
    lexical/          bm25s index over analyzed chunk text (row i = chunk i); the files in LEXICAL_FILES
    rows.npz          per-row arrays computed at build time: chunk_ids (bytes), sentence_counts, and the rows
                      of every section key (section_rows, concatenated; section_offsets into it)
    catalog.json      corpus statistics computed at build time: each document's row range [start, end),
                      the section keys (lower-cased headings at any level and anchors) in the order of
                      section_offsets, document frequencies of stems (doc_freq), common_terms

The dense index type follows the corpus size (indexer.vectors.index_spec: Flat below 50k chunks, HNSW up to
300k, IVF above);
the manifest's "dense" records the factory string, its parameters and why. At load only what a query needs
is held in memory: chunks.jsonl is read a line at a time through a table of line offsets (ChunkStore), and
sentences.npy is memory-mapped.

Writing (`write_version`): every file goes into `versions/.tmp-*`; each file and directory is fsynced, the
directory renamed to `versions/<version>` and `versions/` fsynced. Only then is `CURRENT` switched: a
temporary pointer file is written and fsynced, `os.replace`d over `CURRENT`, and the root fsynced. A crash
at any moment leaves `CURRENT` naming a complete version, the old one or the new one. Old versions are kept
(`keep`, never the one `CURRENT` names) and can be rolled back to (`rollback`).

Reading (`load_index`): the set of required files is fixed here (REQUIRED_FILES), not read from the
manifest. With verification on, the manifest must list a checksum for each of them and every listed file
must match: editing or deleting the manifest's `files` does not switch verification off. Whatever the
checksums, the structure is checked at load: JSON that parses, vector dimension equal to the manifest's
(and the model's), float32 rows, one dense row per chunk and one sentence row per sentence span, finite
values of unit length, one BM25 document per chunk. Anything refused raises IndexLoadError with the reason
and the command that rebuilds the index.

The flat layout of schema 1 (manifest.json directly in the root, no CURRENT) is refused with a message
saying to rebuild; a build into such a root writes versions/ and CURRENT and removes the flat files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: versions/ + CURRENT; 3: + rows.npz, catalog.json, dense index type by size
MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
DOCUMENTS = "documents.json"
DENSE = "dense.faiss"
SENTENCES = "sentences.npy"
CHUNK_VECTORS = "chunk_vectors.npy"  # IVF indexes only (see indexer.vectors)
LEXICAL = "lexical"
LEXICAL_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "params.index.json",
                 "vocab.index.json")
CATALOG = "catalog.json"
ROWS = "rows.npz"
ROWS_ARRAYS = ("chunk_ids", "sentence_counts", "section_rows", "section_offsets")
REQUIRED_FILES = (CHUNKS, DOCUMENTS, DENSE, SENTENCES, CATALOG, ROWS, *(f"{LEXICAL}/{n}" for n in LEXICAL_FILES))
FULL_CHECK_MAX_CHUNKS = 200_000  # up to this many chunks every record is parsed at load; above, a sample
HASH_THREADS = 2  # files hashed at once when checksums are verified at load
CHECK_BLOCK = 65_536  # rows of vectors checked at a time (the check never copies a whole matrix)
COMMON_TERM_SHARE = 0.4  # stems in more than this share of chunks are "common" (not highlighted alone)

CURRENT = "CURRENT"
VERSIONS = "versions"
LOCK = ".build.lock"
TMP_PREFIX = ".tmp-"
DEL_PREFIX = ".del-"
POINTER_TMP_PREFIX = ".CURRENT.tmp-"
DEFAULT_KEEP = 3
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NORM_TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float16): 4e-3}  # float16 rounds each element

REBUILD_HINT = "rebuild it with: python -m indexer build --corpus corpus --out {path} (or `make index`)"


class IndexLoadError(Exception):
    """The index is missing, incomplete, corrupt or incompatible."""


class IndexNotFound(IndexLoadError):
    pass


class IndexIncompatible(IndexLoadError):
    pass


class UnknownVersion(IndexNotFound):
    """A version was asked for by name and the index root does not hold it."""


def drop_pages(array_or_mmap) -> None:
    """Let the kernel drop the pages of a read-only memory map from this process (they stay in the page
    cache): after a whole-file check, resident memory holds only what queries touch."""
    mm = getattr(array_or_mmap, "_mmap", array_or_mmap)
    if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)


class ChunkStore(Sequence):
    """The chunk records of chunks.jsonl, row i = line i, parsed when asked for (never all held in memory).

    Line offsets are found once by scanning the file for newlines in blocks (no per-chunk Python object).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        ends = []
        block = 1 << 24
        for a in range(0, size, block):
            buf = np.frombuffer(self._mm, dtype=np.uint8, count=min(block, size - a), offset=a)
            ends.append(np.flatnonzero(buf == 10) + a)
        nl = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        if size and (not nl.size or nl[-1] != size - 1):
            nl = np.append(nl, size)  # a last line without its newline
        self._starts = np.concatenate([[0], nl[:-1] + 1]).astype(np.int64) if nl.size else nl.astype(np.int64)
        self._ends = nl.astype(np.int64)
        self.size = size
        drop_pages(self._mm)

    def __len__(self) -> int:
        return int(self._ends.size)

    def raw(self, i: int) -> bytes:
        return self._mm[int(self._starts[i]) : int(self._ends[i])]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return json.loads(self.raw(i))


@dataclass
class IndexData:
    path: Path  # the version directory
    manifest: dict
    chunks: ChunkStore  # a sequence of chunk dicts, parsed on access
    documents: dict[str, dict]
    dense: object  # faiss.Index
    lexical: object  # bm25s.BM25 (memory-mapped)
    sentence_vectors: np.ndarray  # (n_sentences, dim), memory-mapped; float32 or float16
    chunk_vectors: np.ndarray | None = None  # (n_chunks, dim) float32 by row: a view of dense, or memory-mapped
    catalog: dict = field(default_factory=dict)  # catalog.json
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # rows.npz

    @property
    def version(self) -> str:
        return self.manifest["index_version"]


@dataclass(frozen=True)
class VersionInfo:
    name: str
    path: Path
    built_at: str | None  # None when the manifest cannot be read
    chunks: int | None
    current: bool


def settings_changed(built: dict | None, wanted: dict | None, ignore: tuple[str, ...] = ()) -> list[str]:
    """The chunker settings (manifest "chunker" dicts) that differ between `built` and `wanted`, sorted."""
    built, wanted = built or {}, wanted or {}
    return sorted(k for k in set(built) | set(wanted) if k not in ignore and built.get(k) != wanted.get(k))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_version(built_at: float, corpus_hashes: dict[str, str]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(built_at))
    digest = hashlib.sha1(json.dumps(corpus_hashes, sort_keys=True).encode()).hexdigest()[:6]
    return f"{stamp}-{digest}"


def valid_version_name(name: str) -> bool:
    return bool(VERSION_RE.fullmatch(name))


# -- writing --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file, then every directory bottom-up, so the rename publishes durable contents."""
    dirs = [root]
    for p in root.rglob("*"):
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        _fsync_dir(d)


def _checksums(vdir: Path) -> dict[str, str]:
    return {p.relative_to(vdir).as_posix(): sha256_file(p)
            for p in sorted(vdir.rglob("*")) if p.is_file() and p.name != MANIFEST}


@contextlib.contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Serialize builds and rollbacks on one root (released by the kernel if the holder dies)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def clean_leftovers(root: Path) -> list[str]:
    """Remove what interrupted builds, prunes and pointer switches left behind. Call under root_lock."""
    removed = []
    for p in sorted(root.glob(POINTER_TMP_PREFIX + "*")):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    versions = root / VERSIONS
    if versions.is_dir():
        for prefix in (TMP_PREFIX, DEL_PREFIX):
            for p in sorted(versions.glob(prefix + "*")):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(f"{VERSIONS}/{p.name}")
    for name in removed:
        log.info("removed leftover %s from %s", name, root)
    return removed


def set_current(root: Path, name: str) -> None:
    """Point CURRENT at `name`: temp file, fsync, os.replace, fsync the root."""
    if not valid_version_name(name):
        raise ValueError(f"not a version name: {name!r}")
    tmp = root / f"{POINTER_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / CURRENT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)


def _free_name(versions: Path, name: str) -> str:
    candidate, n = name, 1
    while (versions / candidate).exists():
        candidate = f"{name}-{n}"
        n += 1
    return candidate


def _remove_flat_layout(root: Path) -> None:
    """A schema-1 index lived directly in the root; once versions/ and CURRENT exist its files are dead."""
    if not (root / MANIFEST).is_file():
        return
    for rel in (MANIFEST, CHUNKS, DOCUMENTS, DENSE, SENTENCES, CHUNK_VECTORS, CATALOG, ROWS):
        (root / rel).unlink(missing_ok=True)
    if (root / LEXICAL).is_dir():
        shutil.rmtree(root / LEXICAL, ignore_errors=True)
    log.info("removed the old flat-layout index files from %s", root)


def section_keys(chunk: dict) -> set[str]:
    """The keys a section filter matches a chunk by: its anchor and every heading of its path, lower-cased."""
    keys = {h.lower() for h in chunk.get("heading_path") or []}
    if chunk.get("anchor"):
        keys.add(chunk["anchor"])
    return keys


def make_catalog(chunks: Sequence[dict], lexical) -> tuple[dict, dict[str, np.ndarray]]:
    """(catalog.json, rows.npz) for `chunks` in row order: one pass over the chunks, document frequencies
    read off the BM25 index (stems, not word pairs: a column's non-zeros are the chunks holding it)."""
    documents: dict[str, list[int]] = {}
    sections: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        span = documents.setdefault(c["doc_id"], [i, i])
        if span[1] != i:
            raise ValueError(f"the chunks of document {c['doc_id']!r} are not contiguous (row {i})")
        span[1] = i + 1
        for key in section_keys(c):
            sections.setdefault(key, []).append(i)
    keys = sorted(sections)
    lengths = np.array([len(sections[k]) for k in keys], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    section_rows = (np.concatenate([np.asarray(sections[k], dtype=np.int32) for k in keys]) if keys
                    else np.zeros(0, np.int32))
    indptr = np.asarray(lexical.scores["indptr"])
    df_all = np.diff(indptr)
    doc_freq = {t: int(df_all[j]) for t, j in lexical.vocab_dict.items()
                if t and "_" not in t and t != "\x00" and j < df_all.size and df_all[j] > 0}
    limit = max(2, COMMON_TERM_SHARE * len(chunks))
    catalog = {
        "documents": documents,
        "sections": keys,
        "doc_freq": doc_freq,
        "common_terms": sorted(t for t, n in doc_freq.items() if n > limit),
    }
    rows = {
        "chunk_ids": np.array([c["chunk_id"].encode() for c in chunks], dtype="S"),
        "sentence_counts": np.array([len(c["sentences"]) for c in chunks], dtype=np.int32),
        "section_rows": section_rows,
        "section_offsets": offsets,
    }
    return catalog, rows


def write_version(
    root: Path,
    chunks: Sequence[dict],
    documents: dict[str, dict],
    embeddings: np.ndarray,
    lexical,
    manifest: dict,
    sentence_vectors: np.ndarray,
    activate: bool = True,
    keep: int = DEFAULT_KEEP,
    dense_spec: dict | None = None,
) -> Path:
    """Write a new version under `root/versions/`, switch CURRENT to it (when `activate`) and prune old
    versions beyond `keep`. Returns the version directory; its name is the manifest's `index_version`
    (with a `-N` suffix if a version of that name exists already). The dense index type is chosen by size
    (`indexer.vectors.index_spec`) unless `dense_spec` gives one."""
    import faiss

    from indexer.vectors import build_dense_index, index_spec, sentence_dtype

    if keep < 1:
        raise ValueError("keep must be at least 1")
    root = Path(root)
    with root_lock(root):
        clean_leftovers(root)
        versions = root / VERSIONS
        versions.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=versions))
        try:
            with open(tmp / CHUNKS, "w", encoding="utf-8") as f:
                for c in chunks:
                    f.write(json.dumps(c, ensure_ascii=False) + "\n")
            (tmp / DOCUMENTS).write_text(json.dumps(documents, ensure_ascii=False, indent=1), encoding="utf-8")
            spec = dense_spec or index_spec(len(embeddings), int(embeddings.shape[1]))
            t_dense = time.time()
            index = build_dense_index(embeddings, spec)
            faiss.write_index(index, str(tmp / DENSE))
            if spec.get("row_vectors"):  # an IVF index keeps no vectors by row: write them beside it
                np.save(tmp / CHUNK_VECTORS, np.ascontiguousarray(embeddings, dtype=np.float32))
            sdtype = spec.get("sentence_dtype") or sentence_dtype(len(embeddings))
            spec = {**spec, "sentence_dtype": sdtype, "build_seconds": round(time.time() - t_dense, 2)}
            del index
            _save_rows(tmp / SENTENCES, sentence_vectors, np.dtype(sdtype))
            lexical.save(str(tmp / LEXICAL), show_progress=False)
            catalog, rows = make_catalog(chunks, lexical)
            (tmp / CATALOG).write_text(json.dumps(catalog, ensure_ascii=False), encoding="utf-8")
            with open(tmp / ROWS, "wb") as f:
                np.savez(f, **rows)
            missing = [rel for rel in REQUIRED_FILES if not (tmp / rel).is_file()]
            if missing:  # a bm25s release that saves other files: fail the build, never write an unloadable index
                raise RuntimeError(f"the build did not write {', '.join(missing)}")
            name = _free_name(versions, manifest["index_version"])
            manifest = dict(manifest)
            manifest["index_version"] = name
            manifest["schema_version"] = SCHEMA_VERSION
            manifest["package_version"] = __version__
            manifest["files"] = _checksums(tmp)
            manifest.setdefault("counts", {})["chunks"] = len(chunks)
            manifest["dense"] = spec
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
            os.chmod(tmp, 0o755)  # mkdtemp made it private; the service may run as another user
            _fsync_tree(tmp)
            os.rename(tmp, versions / name)  # fails rather than replace a version of that name
            _fsync_dir(versions)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if activate:
            set_current(root, name)
            _remove_flat_layout(root)
        prune(root, keep)
    return versions / name


# -- the root: pointer, versions, retention, rollback ----------------------------------------------------


def read_current(root: Path) -> str | None:
    """The version CURRENT names, None when there is no CURRENT; garbage in it is an IndexLoadError."""
    path = Path(root) / CURRENT
    try:
        raw = path.read_bytes()[:512]
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IndexLoadError(f"cannot read {path} ({e}); " + REBUILD_HINT.format(path=root)) from e
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = None
    if not name or not valid_version_name(name):
        raise IndexLoadError(f"{path} does not name a version (it holds {raw[:40]!r}); point it at one with "
                             f"python -m indexer rollback --out {root} --to VERSION, or "
                             + REBUILD_HINT.format(path=root))
    return name


def resolve(path: Path) -> tuple[Path, Path]:
    """(index root, version directory) for an index root (through CURRENT) or a version directory."""
    path = Path(path)
    try:
        return _resolve(path)
    except OSError as e:  # a directory on the way that cannot be read
        root = path.parent.parent if path.parent.name == VERSIONS else path
        raise IndexLoadError(f"cannot read the index at {path} ({e}); " + REBUILD_HINT.format(path=root)) from e


def _resolve(path: Path) -> tuple[Path, Path]:
    if (path / CURRENT).exists() or (path / CURRENT).is_symlink():
        name = read_current(path)
        vdir = path / VERSIONS / name
        if not vdir.is_dir():
            raise IndexNotFound(f"{path / CURRENT} names version {name!r}, which is not in {path / VERSIONS}; "
                                f"roll back with python -m indexer rollback --out {path}, or "
                                + REBUILD_HINT.format(path=path))
        return path, vdir
    if path.parent.name == VERSIONS and path.is_dir():
        return path.parent.parent, path
    if (path / MANIFEST).is_file():
        raise IndexIncompatible(f"{path} holds an index in the old flat layout (manifest.json in the root, no "
                                f"CURRENT); " + REBUILD_HINT.format(path=path)
                                + ", which writes versions/ and CURRENT there")
    if (path / VERSIONS).is_dir():
        raise IndexNotFound(f"{path} has versions/ but no {CURRENT} pointer; point it at a version with "
                            f"python -m indexer rollback --out {path} --to VERSION, or "
                            + REBUILD_HINT.format(path=path))
    raise IndexNotFound(f"no index at {path} (no {CURRENT}); " + REBUILD_HINT.format(path=path))


def version_dir(root: Path, name: str) -> Path:
    """The directory of version `name` under `root`; UnknownVersion when there is none."""
    root = Path(root)
    if not valid_version_name(name):
        raise UnknownVersion(f"{name!r} is not a version name (letters, digits, '.', '_', '-')")
    vdir = root / VERSIONS / name
    if not vdir.is_dir():
        known = ", ".join(v.name for v in list_versions(root)) or "none"
        raise UnknownVersion(f"no version {name!r} in {root / VERSIONS} (versions: {known})")
    return vdir


def has_index(root: Path) -> bool:
    """Whether `root` has a CURRENT naming a version directory with a manifest (cheap; no verification)."""
    try:
        _, vdir = resolve(root)
    except IndexLoadError:
        return False
    return (vdir / MANIFEST).is_file()


def _built_at(vdir: Path) -> tuple[float, str | None, int | None]:
    try:
        m = json.loads((vdir / MANIFEST).read_text(encoding="utf-8"))
        return float(m.get("built_at_unix", 0.0)), m.get("built_at"), (m.get("counts") or {}).get("chunks")
    except (OSError, ValueError, AttributeError, TypeError):
        return 0.0, None, None


def list_versions(root: Path) -> list[VersionInfo]:
    """The versions under `root`, oldest first (by build time, then name)."""
    root = Path(root)
    versions = root / VERSIONS
    if not versions.is_dir():
        return []
    try:
        current = read_current(root)
    except IndexLoadError:
        current = None
    rows = []
    for p in versions.iterdir():
        if p.is_dir() and valid_version_name(p.name):
            unix, built_at, chunks = _built_at(p)
            rows.append((unix, p.name, VersionInfo(p.name, p, built_at, chunks, p.name == current)))
    return [r[2] for r in sorted(rows, key=lambda r: (r[0], r[1]))]


def prune(root: Path, keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete all but the newest `keep` versions, never the one CURRENT names. Call under root_lock."""
    try:
        current = read_current(root)
    except IndexLoadError:
        log.warning("not pruning %s: its CURRENT is unreadable", root)
        return []
    versions = list_versions(root)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v.name != current]
    for v in doomed:
        tmp = v.path.parent / f"{DEL_PREFIX}{v.name}-{secrets.token_hex(4)}"
        os.rename(v.path, tmp)  # one atomic step out of the listing; the slow delete comes after
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("pruned version %s from %s", v.name, root)
    return [v.name for v in doomed]


def rollback(root: Path, to: str | None = None, verify: bool = True) -> tuple[str | None, str]:
    """Point CURRENT at `to`, or at the newest version older than the current one that loads. The target
    is loaded and checked first. Returns (previous, new)."""
    root = Path(root)
    with root_lock(root):
        clean_leftovers(root)
        try:
            current = read_current(root)
        except IndexLoadError:
            current = None
        versions = list_versions(root)
        names = [v.name for v in versions]
        if to is not None:
            candidates = [version_dir(root, to).name]
        else:
            older = names[: names.index(current)] if current in names else names
            candidates = list(reversed(older))
            if not candidates:
                raise UnknownVersion(f"no version older than {current!r} in {root / VERSIONS} to roll back to")
        reasons = []
        for name in candidates:
            try:
                load_index(root / VERSIONS / name, verify=verify)
            except IndexLoadError as e:
                reasons.append(f"{name}: {e}")
                continue
            set_current(root, name)
            return current, name
        raise IndexLoadError("no version to roll back to loads: " + " | ".join(reasons))


# -- reading -----------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict:
    """The manifest of the version an index root's CURRENT names (or of a version directory)."""
    root, vdir = resolve(path)
    return _read_manifest(vdir, root)


def _read_manifest(vdir: Path, root: Path) -> dict:
    mf = vdir / MANIFEST
    hint = REBUILD_HINT.format(path=root)
    if not mf.exists() and not mf.is_symlink():
        raise IndexNotFound(f"index version {vdir} has no {MANIFEST}; {hint}")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IndexLoadError(f"{mf} is not valid JSON ({e}); {hint}") from e
    except OSError as e:
        raise IndexLoadError(f"cannot read {mf} ({e}); {hint}") from e
    if not isinstance(manifest, dict):
        raise IndexLoadError(f"{mf} is not a JSON object; {hint}")
    return manifest


def check_compatible(manifest: dict, path: Path, model_name: str | None, dim: int | None) -> None:
    hint = REBUILD_HINT.format(path=path)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IndexIncompatible(
            f"index at {path} has schema version {manifest.get('schema_version')}, this service reads "
            f"version {SCHEMA_VERSION}; {hint}"
        )
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("dim"), int) or model["dim"] < 1:
        raise IndexIncompatible(f"index at {path}: the manifest gives no model dimension; {hint}")
    if model_name is not None and model.get("name") != model_name:
        raise IndexIncompatible(
            f"index at {path} was built with the model {model.get('name')!r}, the service uses {model_name!r}; {hint}"
        )
    if dim is not None and model["dim"] != dim:
        raise IndexIncompatible(f"index at {path} has {model['dim']}-d vectors, the model gives {dim}; {hint}")


def _verify_checksums(vdir: Path, manifest: dict, hint: str) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IndexLoadError(f"{vdir / MANIFEST} lists no file checksums (edited, or not written by "
                             f"python -m indexer build), so its files cannot be verified; {hint}")
    unlisted = [rel for rel in REQUIRED_FILES if rel not in files]
    if unlisted:
        raise IndexLoadError(f"{vdir / MANIFEST} lists no checksum for {', '.join(unlisted)}; {hint}")
    for rel, digest in files.items():
        p = vdir / rel
        inside = not Path(rel).is_absolute() and ".." not in Path(rel).parts
        if not inside or not isinstance(digest, str) or not p.is_file():
            raise IndexLoadError(f"index file {p} is missing or does not match its checksum; {hint}")
    # hashlib releases the GIL while it hashes: two threads hash two files at once (a million-chunk index
    # is several GB: about 10 s on one core)
    rels = sorted(files, key=lambda rel: -(vdir / rel).stat().st_size)
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        for rel, actual in zip(rels, pool.map(lambda rel: sha256_file(vdir / rel), rels), strict=True):
            if actual != files[rel]:
                raise IndexLoadError(f"index file {vdir / rel} is missing or does not match its checksum; {hint}")


def _check_chunk_records(chunks: ChunkStore, counts: np.ndarray | None) -> None:
    """Every record (a sample above FULL_CHECK_MAX_CHUNKS) parses, is a chunk, and lists as many sentences
    as rows.npz says (when `counts` has one per chunk)."""
    n = len(chunks)
    rows: Iterator[int] | list[int]
    if n <= FULL_CHECK_MAX_CHUNKS:
        rows = range(n)
    else:
        rows = sorted({0, n - 1, *np.linspace(0, n - 1, 1000).astype(int).tolist()})
    same = counts is not None and counts.shape == (n,)
    for i in rows:
        try:
            c = json.loads(chunks.raw(i))
        except ValueError as e:
            raise IndexLoadError(f"{chunks.path}:{i + 1} is not valid JSON ({e})") from e
        if (not isinstance(c, dict) or not isinstance(c.get("text"), str) or not c.get("chunk_id")
                or not isinstance(c.get("sentences"), list)):
            raise IndexLoadError(f"{chunks.path}:{i + 1} is not a chunk record (text, chunk_id, sentences)")
        if same and len(c["sentences"]) != int(counts[i]):
            raise IndexLoadError(f"{chunks.path}:{i + 1} lists {len(c['sentences'])} sentences, rows.npz "
                                 f"{int(counts[i])}")
    drop_pages(chunks._mm)


def _save_rows(path: Path, vectors: np.ndarray, dtype: np.dtype) -> None:
    """np.save of `vectors` as `dtype`, converted a block at a time (no second copy of a large matrix)."""
    vectors = np.asarray(vectors)
    if vectors.dtype == dtype and vectors.flags.c_contiguous:
        np.save(path, vectors)
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=vectors.shape)
    for a in range(0, len(vectors), CHECK_BLOCK):
        out[a : a + CHECK_BLOCK] = vectors[a : a + CHECK_BLOCK]
    out.flush()
    del out


def _check_vectors(what: str, v: np.ndarray, rows: int, dim: int, row_name: str,
                   dtypes: tuple = (np.float32,)) -> None:
    if v.dtype not in dtypes or v.ndim != 2:
        want = " or ".join(np.dtype(d).name for d in dtypes)
        raise IndexLoadError(f"{what} holds {v.dtype} of shape {v.shape}; expected {want} rows")
    tolerance = NORM_TOLERANCE[np.dtype(v.dtype)]
    if v.shape[1] != dim:
        raise IndexLoadError(f"{what} has {v.shape[1]}-d vectors; the manifest and the model give {dim}")
    if v.shape[0] != rows:
        raise IndexLoadError(f"{what} has {v.shape[0]} vectors for {rows} {row_name}")
    bad = off = 0
    for a in range(0, rows, CHECK_BLOCK):  # in blocks: a memory-mapped matrix is never copied whole
        block = np.asarray(v[a : a + CHECK_BLOCK])
        finite = np.isfinite(block).all(axis=1)
        bad += int((~finite).sum())
        norms = np.linalg.norm(np.where(finite[:, None], block, 0).astype(np.float32), axis=1)
        off += int((finite & (np.abs(norms - 1.0) > tolerance)).sum())
        drop_pages(v)  # a memory-mapped matrix: what was checked need not stay resident
    if bad:
        raise IndexLoadError(f"{what}: {bad} vectors hold NaN or infinite values")
    if off:
        raise IndexLoadError(f"{what}: {off} vectors are not of unit length")


def _load_rows(vdir: Path, n_chunks: int) -> tuple[dict, dict[str, np.ndarray]]:
    """catalog.json and rows.npz, checked against each other and the chunk count."""
    catalog = json.loads((vdir / CATALOG).read_text(encoding="utf-8"))
    if (not isinstance(catalog, dict) or not isinstance(catalog.get("documents"), dict)
            or not isinstance(catalog.get("sections"), list) or not isinstance(catalog.get("doc_freq"), dict)
            or not isinstance(catalog.get("common_terms"), list)):
        raise IndexLoadError(f"{vdir / CATALOG} is not a catalog (documents, sections, doc_freq, common_terms)")
    with np.load(vdir / ROWS, allow_pickle=False) as z:
        missing = [k for k in ROWS_ARRAYS if k not in z.files]
        if missing:
            raise IndexLoadError(f"{vdir / ROWS} lacks {', '.join(missing)}")
        rows = {k: z[k] for k in ROWS_ARRAYS}
    if rows["chunk_ids"].shape != (n_chunks,) or rows["sentence_counts"].shape != (n_chunks,):
        raise IndexLoadError(f"{vdir / ROWS} has {rows['chunk_ids'].shape[0]} chunk ids and "
                             f"{rows['sentence_counts'].shape[0]} sentence counts for {n_chunks} chunks")
    if (rows["sentence_counts"] < 1).any():
        raise IndexLoadError(f"{vdir / ROWS}: a chunk without sentences")
    spans = sorted(tuple(v) for v in catalog["documents"].values())
    cover = 0
    for a, b in spans:
        if a != cover or b <= a:
            raise IndexLoadError(f"{vdir / CATALOG}: document row ranges do not tile the {n_chunks} chunks")
        cover = b
    if cover != n_chunks:
        raise IndexLoadError(f"{vdir / CATALOG}: document row ranges cover {cover} of {n_chunks} chunks")
    off, srows = rows["section_offsets"], rows["section_rows"]
    if (off.shape != (len(catalog["sections"]) + 1,) or (off.size and (off[0] != 0 or off[-1] != srows.size))
            or (np.diff(off) < 0).any() or (srows.size and (srows.min() < 0 or srows.max() >= n_chunks))):
        raise IndexLoadError(f"{vdir / ROWS}: section rows do not match the catalog's sections and chunks")
    return catalog, rows


def _open_lexical(path: Path):
    """bm25s memory-mapped (the score matrix stays on disk until a query term touches it)."""
    from indexer.lexical import _bm25s

    return _bm25s().BM25.load(str(path), show_progress=False, verbosity=0, mmap=True)


def load_index(path: Path, model_name: str | None = None, dim: int | None = None, verify: bool = True) -> IndexData:
    """Load the version an index root's CURRENT names (or a version directory), refusing one that is
    incomplete, corrupt or built for another model. `verify`: check file checksums too."""
    root, vdir = resolve(path)
    hint = REBUILD_HINT.format(path=root)
    try:
        return _load_version(vdir, root, model_name, dim, verify, hint)
    except IndexLoadError as e:
        if hint in str(e):
            raise
        raise type(e)(f"{e}; {hint}") from e
    except Exception as e:  # faiss, numpy, bm25s and the OS on a corrupt or unreadable file
        detail = " ".join(str(e).split())[:300]
        raise IndexLoadError(f"index version {vdir} cannot be read ({type(e).__name__}: {detail}); {hint}") from e


def _load_version(vdir: Path, root: Path, model_name: str | None, dim: int | None, verify: bool,
                  hint: str) -> IndexData:
    import faiss

    from indexer.vectors import flat_view, keeps_row_vectors

    manifest = _read_manifest(vdir, root)
    check_compatible(manifest, root, model_name, dim)
    if vdir.parent.name == VERSIONS and manifest.get("index_version") != vdir.name:
        raise IndexLoadError(f"{vdir / MANIFEST} names version {manifest.get('index_version')!r} but lives in "
                             f"{vdir.name!r} (moved or edited)")
    missing = [rel for rel in REQUIRED_FILES if not (vdir / rel).is_file()]
    if missing:
        raise IndexLoadError(f"index version {vdir} is incomplete: {', '.join(missing)} missing")
    if verify:
        _verify_checksums(vdir, manifest, hint)
    mdim = manifest["model"]["dim"]
    chunks = ChunkStore(vdir / CHUNKS)
    with np.load(vdir / ROWS, allow_pickle=False) as z:
        counts = z["sentence_counts"] if "sentence_counts" in z.files else None
    _check_chunk_records(chunks, counts)
    documents = json.loads((vdir / DOCUMENTS).read_text(encoding="utf-8"))
    if not isinstance(documents, dict):
        raise IndexLoadError(f"{vdir / DOCUMENTS} is not a JSON object")
    dense = faiss.read_index(str(vdir / DENSE))
    if dense.d != mdim:
        raise IndexLoadError(f"{vdir / DENSE} has {dense.d}-d vectors; the manifest gives {mdim}")
    if dense.ntotal != len(chunks):
        raise IndexLoadError(f"{vdir / DENSE} has {dense.ntotal} vectors for {len(chunks)} chunks")
    if keeps_row_vectors(dense):
        chunk_vectors = flat_view(dense)
        where = str(vdir / DENSE)
    else:  # IVF: the vectors by row are in chunk_vectors.npy, which is then required (and checksummed)
        if not (vdir / CHUNK_VECTORS).is_file():
            raise IndexLoadError(f"index version {vdir} is incomplete: {CHUNK_VECTORS} missing (required beside "
                                 f"an IVF {DENSE})")
        if verify and CHUNK_VECTORS not in manifest.get("files", {}):
            raise IndexLoadError(f"{vdir / MANIFEST} lists no checksum for {CHUNK_VECTORS}; {hint}")
        chunk_vectors = np.load(vdir / CHUNK_VECTORS, allow_pickle=False, mmap_mode="r")
        where = str(vdir / CHUNK_VECTORS)
    _check_vectors(where, chunk_vectors, len(chunks), mdim, "chunks")
    catalog, rows = _load_rows(vdir, len(chunks))
    sentence_vectors = np.load(vdir / SENTENCES, allow_pickle=False, mmap_mode="r")
    n_sent = int(rows["sentence_counts"].sum())
    _check_vectors(str(vdir / SENTENCES), sentence_vectors, n_sent, mdim, "sentences", (np.float32, np.float16))
    lexical = _open_lexical(vdir / LEXICAL)
    scores = getattr(lexical, "scores", None)
    n_docs = scores.get("num_docs") if isinstance(scores, dict) else None
    if n_docs != len(chunks):
        raise IndexLoadError(f"{vdir / LEXICAL} indexes {n_docs} documents for {len(chunks)} chunks")
    return IndexData(path=vdir, manifest=manifest, chunks=chunks, documents=documents, dense=dense,
                     lexical=lexical, sentence_vectors=sentence_vectors, catalog=catalog, rows=rows,
                     chunk_vectors=chunk_vectors)
