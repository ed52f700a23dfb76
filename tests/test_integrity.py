"""Corrupt index versions are refused with a clear reason, at start (/readyz 503) and at reload (the old
version keeps serving): truncated or bit-flipped vectors, missing or edited chunks, manifest edits including
a deleted `files` list, wrong schema/model/dimension, NaN and wrong-dimension vectors with checksums off,
missing lexical files, unreadable files, a CURRENT that names nothing usable."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from indexer.store import CURRENT, REQUIRED_FILES, IndexLoadError, load_index, set_current, sha256_file
from tests.conftest import ADMIN_TOKEN, MARKER_QUERY, ROOT, copy_root, make_client

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# -- mutations of version B (vdir) or of the root ---------------------------------------------------------

def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _manifest(vdir: Path, edit: Callable[[dict], None]) -> None:
    mf = vdir / "manifest.json"
    m = json.loads(mf.read_text())
    edit(m)
    mf.write_text(json.dumps(m))


def _resign(vdir: Path) -> None:
    """Recompute the manifest's checksums, as an attacker or a buggy tool that edits files would."""
    _manifest(vdir, lambda m: m.__setitem__("files", {rel: sha256_file(vdir / rel) for rel in m["files"]}))


def _sentences(vdir: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    path = vdir / "sentences.npy"
    np.save(path, edit(np.load(path)))


def _dense(vdir: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    import faiss

    index = faiss.read_index(str(vdir / "dense.faiss"))
    v = edit(index.reconstruct_n(0, index.ntotal))
    new = faiss.IndexFlatIP(v.shape[1])
    new.add(np.ascontiguousarray(v, dtype=np.float32))
    faiss.write_index(new, str(vdir / "dense.faiss"))


def _nan_row(v: np.ndarray) -> np.ndarray:
    v = v.copy()
    v[1, 3] = np.nan
    return v


def _drop_chunk_line(vdir: Path) -> None:
    lines = (vdir / "chunks.jsonl").read_text().splitlines(keepends=True)
    (vdir / "chunks.jsonl").write_text("".join(lines[:-1]))


def _edit_chunk_text(vdir: Path) -> None:
    p = vdir / "chunks.jsonl"
    p.write_text(p.read_text().replace("flamingos", "pelicans", 1))


def _lexical_of_other_texts(vdir: Path) -> None:
    """A well-formed BM25 index with one document per chunk, of other texts: loads, answers nothing."""
    from indexer.lexical import build_lexical

    n = len((vdir / "chunks.jsonl").read_text().splitlines())
    shutil.rmtree(vdir / "lexical")
    build_lexical([f"zebra quokka {i}" for i in range(n)]).save(str(vdir / "lexical"), show_progress=False)
    _resign(vdir)


def _catalog(vdir: Path, edit: Callable[[dict], None]) -> None:
    p = vdir / "catalog.json"
    c = json.loads(p.read_text())
    edit(c)
    p.write_text(json.dumps(c))


def _rows(vdir: Path, edit: Callable[[dict], None]) -> None:
    p = vdir / "rows.npz"
    with np.load(p) as z:
        rows = {k: z[k] for k in z.files}
    edit(rows)
    with open(p, "wb") as f:
        np.savez(f, **rows)


def _shift_first_document(c: dict) -> None:
    doc = next(iter(c["documents"]))
    c["documents"][doc][0] += 1


def _symlink_loop(vdir: Path) -> None:
    (vdir / "manifest.json").unlink()
    os.symlink("manifest.json", vdir / "manifest.json")  # reading it: ELOOP, an unreadable file


def _unreadable_dir(vdir: Path) -> None:
    vdir.chmod(0)


@dataclass
class Variant:
    name: str
    mutate: Callable[[Path, Path], None]  # (root, vdir of B)
    reason: str  # a regex the refusal must match
    verify: bool = True  # REPORTQA_VERIFY_CHECKSUMS
    points_current: bool = True  # after mutating, CURRENT is pointed at B (False: the mutation sets CURRENT)


V = Variant
VARIANTS = [
    V("dense-truncated", lambda r, d: _truncate(d / "dense.faiss"), r"dense\.faiss is missing or does not match"),
    V("dense-bit-flipped", lambda r, d: _flip(d / "dense.faiss"), r"dense\.faiss is missing or does not match"),
    V("sentences-truncated", lambda r, d: _truncate(d / "sentences.npy"), r"sentences\.npy is missing or does not"),
    V("sentences-bit-flipped", lambda r, d: _flip(d / "sentences.npy"), r"sentences\.npy is missing or does not"),
    V("dense-truncated-unverified", lambda r, d: _truncate(d / "dense.faiss"), r"cannot be read \(RuntimeError",
      verify=False),
    V("sentences-truncated-unverified", lambda r, d: _truncate(d / "sentences.npy"), r"cannot be read \(",
      verify=False),
    V("chunks-missing", lambda r, d: (d / "chunks.jsonl").unlink(), r"incomplete: chunks\.jsonl missing"),
    V("chunks-edited", lambda r, d: _edit_chunk_text(d), r"chunks\.jsonl is missing or does not match"),
    V("chunks-line-dropped-unverified", lambda r, d: _drop_chunk_line(d),
      r"dense\.faiss has \d+ vectors for \d+ chunks", verify=False),
    V("chunks-garbage-unverified", lambda r, d: (d / "chunks.jsonl").write_text("{not json\n"),
      r"chunks\.jsonl:1 is not valid JSON", verify=False),
    V("documents-missing", lambda r, d: (d / "documents.json").unlink(), r"incomplete: documents\.json missing"),
    V("manifest-files-deleted", lambda r, d: _manifest(d, lambda m: m.pop("files")), r"lists no file checksums"),
    V("manifest-files-emptied", lambda r, d: _manifest(d, lambda m: m.__setitem__("files", {})),
      r"lists no file checksums"),
    V("manifest-files-entry-deleted", lambda r, d: _manifest(d, lambda m: m["files"].pop("dense.faiss")),
      r"lists no checksum for dense\.faiss"),
    V("manifest-digest-edited", lambda r, d: _manifest(d, lambda m: m["files"].__setitem__("sentences.npy", "0" * 64)),
      r"sentences\.npy is missing or does not match"),
    V("manifest-missing", lambda r, d: (d / "manifest.json").unlink(), r"has no manifest\.json"),
    V("manifest-not-json", lambda r, d: (d / "manifest.json").write_text("{\"schema_version\": 3,"),
      r"manifest\.json is not valid JSON"),
    V("manifest-unreadable-symlink-loop", lambda r, d: _symlink_loop(d), r"cannot read .*manifest\.json"),
    V("manifest-schema", lambda r, d: _manifest(d, lambda m: m.__setitem__("schema_version", 1)),
      r"schema version 1, this service reads version 3"),
    V("manifest-model", lambda r, d: _manifest(d, lambda m: m["model"].__setitem__("name", "other-model")),
      r"built with the model 'other-model'"),
    V("manifest-dim", lambda r, d: _manifest(d, lambda m: m["model"].__setitem__("dim", 32)),
      r"32-d vectors, the model gives 64"),
    V("manifest-version-renamed", lambda r, d: _manifest(d, lambda m: m.__setitem__("index_version", "x")),
      r"names version 'x' but lives in"),
    V("dense-nan-unverified", lambda r, d: _dense(d, _nan_row), r"dense\.faiss: 1 vectors hold NaN", verify=False),
    V("sentences-nan-unverified", lambda r, d: _sentences(d, _nan_row), r"sentences\.npy: 1 vectors hold NaN",
      verify=False),
    V("sentences-nan-resigned", lambda r, d: (_sentences(d, _nan_row), _resign(d)),
      r"sentences\.npy: 1 vectors hold NaN"),
    V("sentences-wrong-dim-unverified", lambda r, d: _sentences(d, lambda v: v[:, :32] / np.linalg.norm(
        v[:, :32], axis=1, keepdims=True)), r"sentences\.npy has 32-d vectors; the manifest and the model give 64",
      verify=False),
    V("sentences-float64-unverified", lambda r, d: _sentences(d, lambda v: v.astype(np.float64)),
      r"sentences\.npy holds float64", verify=False),
    V("sentences-not-unit-unverified", lambda r, d: _sentences(d, lambda v: v * 2), r"not of unit length",
      verify=False),
    V("sentences-pickled-unverified", lambda r, d: np.save(d / "sentences.npy", np.array([{"a": 1}], dtype=object),
                                                            allow_pickle=True), r"cannot be read \(ValueError",
      verify=False),
    V("dense-row-dropped-unverified", lambda r, d: _dense(d, lambda v: v[:-1]), r"dense\.faiss has \d+ vectors for",
      verify=False),
    V("lexical-vocab-missing", lambda r, d: (d / "lexical" / "vocab.index.json").unlink(),
      r"incomplete: lexical/vocab\.index\.json missing"),
    V("lexical-dir-missing", lambda r, d: shutil.rmtree(d / "lexical"), r"incomplete: lexical/data\.csc\.index\.npy"),
    V("lexical-garbage-unverified", lambda r, d: (d / "lexical" / "vocab.index.json").write_text("]"),
      r"cannot be read \(", verify=False),
    V("lexical-of-other-texts-resigned", lambda r, d: _lexical_of_other_texts(d),
      r"failed a probe: probe query .* found 0 passages in lexical mode"),
    V("catalog-missing", lambda r, d: (d / "catalog.json").unlink(), r"incomplete: catalog\.json missing"),
    V("catalog-edited", lambda r, d: _catalog(d, lambda c: c["doc_freq"].clear()),
      r"catalog\.json is missing or does not match"),
    V("catalog-garbage-unverified", lambda r, d: (d / "catalog.json").write_text("[1"), r"cannot be read \(",
      verify=False),
    V("catalog-document-rows-unverified", lambda r, d: _catalog(d, _shift_first_document),
      r"catalog\.json: document row ranges", verify=False),
    V("rows-missing", lambda r, d: (d / "rows.npz").unlink(), r"incomplete: rows\.npz missing"),
    V("rows-bit-flipped", lambda r, d: _flip(d / "rows.npz"), r"rows\.npz is missing or does not match"),
    V("rows-chunk-id-dropped-unverified",
      lambda r, d: _rows(d, lambda z: z.__setitem__("chunk_ids", z["chunk_ids"][:-1])),
      r"rows\.npz has \d+ chunk ids", verify=False),
    V("rows-sentence-count-wrong-unverified",
      lambda r, d: _rows(d, lambda z: z["sentence_counts"].__setitem__(0, z["sentence_counts"][0] + 1)),
      r"chunks\.jsonl:1 lists \d+ sentences, rows\.npz", verify=False),
    V("rows-section-out-of-range-unverified",
      lambda r, d: _rows(d, lambda z: z["section_rows"].__setitem__(0, 10**6)),
      r"rows\.npz: section rows do not match", verify=False),
    V("unreadable-directory", lambda r, d: _unreadable_dir(d), r"(Permission denied|cannot read)"),
    V("current-names-missing-version", lambda r, d: set_current(r, "2020-01-01T00-00-00Z-000000"),
      r"names version '2020-01-01T00-00-00Z-000000', which is not in", points_current=False),
    V("current-garbage", lambda r, d: (r / CURRENT).write_bytes(b"\x00\xff\xfe garbage"),
      r"CURRENT does not name a version", points_current=False),
    V("current-path-traversal", lambda r, d: (r / CURRENT).write_text("../../etc\n"),
      r"CURRENT does not name a version", points_current=False),
    V("current-empty", lambda r, d: (r / CURRENT).write_text(""), r"CURRENT does not name a version",
      points_current=False),
    V("current-deleted", lambda r, d: (r / CURRENT).unlink(), r"has versions/ but no CURRENT pointer",
      points_current=False),
]


def _break(root: Path, b: str, variant: Variant) -> None:
    variant.mutate(root, root / "versions" / b)
    if variant.points_current:
        set_current(root, b)


def _client(root: Path, fake_embedder, verify: bool):
    return make_client(root, fake_embedder, verify_checksums=verify, admin_token=ADMIN_TOKEN,
                       load_retry_initial=3600)  # no retry during the test


def _top_doc(c, version: str) -> None:
    r = c.get("/v1/search", params={"q": MARKER_QUERY, "mode": "lexical", "k": 1})
    assert r.status_code == 200 and r.json()["index_version"] == version
    assert r.json()["results"][0]["citation"]["doc_id"] == "census-alpha"


def _permissions_enforced(tmp: Path) -> bool:
    probe = tmp / "permission-probe"
    probe.mkdir()
    probe.chmod(0)
    try:
        os.listdir(probe)
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)


def _rerun_without_dac_override(test_id: str, tmp: Path) -> None:
    """Root reads a directory whatever its mode: run the test again as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (setpriv), where a mode-000 directory is unreadable."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("permissions are not enforced for this user and setpriv (util-linux) is missing")
    r = subprocess.run([setpriv, "--inh-caps=-all", "--ambient-caps=-all",
                        "--bounding-set=-dac_override,-dac_read_search", "--",
                        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp / 'child'}",
                        f"{Path(__file__).relative_to(ROOT)}::{test_id}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_corrupt_version_is_refused_at_start_and_at_reload(variant, two_versions, fake_embedder, tmp_path, request):
    if variant.name == "unreadable-directory" and not _permissions_enforced(tmp_path):
        _rerun_without_dac_override(request.node.name, tmp_path)
        return
    # at start: nothing is served and /readyz says why
    root, a, b = copy_root(two_versions, tmp_path / "start")
    _break(root, b, variant)
    with _client(root, fake_embedder, variant.verify) as c:
        r = c.get("/readyz")
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert re.search(variant.reason, detail), detail
        assert "python -m indexer" in detail  # says how to rebuild or roll back
        assert c.get("/v1/search", params={"q": MARKER_QUERY}).status_code == 503
    # at reload: the reload answers the reason, the old version keeps serving
    root, a, b = copy_root(two_versions, tmp_path / "reload")
    with _client(root, fake_embedder, variant.verify) as c:
        _top_doc(c, a)
        _break(root, b, variant)
        attempts = [c.post("/v1/admin/reload", headers=AUTH)]
        if variant.points_current:
            attempts.append(c.post("/v1/admin/reload", headers=AUTH, json={"version": b}))
        for r in attempts:
            assert r.status_code == 500, r.text
            assert re.search(variant.reason, r.json()["detail"]), r.json()["detail"]
            assert r.json()["serving"] == a
        assert c.get("/readyz").json() == {"status": "ready", "index_version": a}
        _top_doc(c, a)
        assert c.get("/v1/admin/versions", headers=AUTH).json()["last_reload"]["ok"] is False


def test_the_variants_cover_every_required_file():
    """Each file the loader requires is damaged by at least one variant (so a new file gets a new variant)."""
    names = " ".join(v.name + " " + v.reason for v in VARIANTS)
    for rel in REQUIRED_FILES:
        stem = rel.split("/")[0].split(".")[0]
        assert stem in names, rel


def test_library_refusals_are_index_load_errors(two_versions, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "r")
    _break(root, b, VARIANTS[[v.name for v in VARIANTS].index("sentences-nan-unverified")])
    with pytest.raises(IndexLoadError, match="NaN"):
        load_index(root, verify=False)
    with pytest.raises(IndexLoadError, match="sentences.npy is missing or does not match"):
        load_index(root)  # with verification, the checksum catches it first
    assert load_index(root / "versions" / a).version == a
