"""The index root: manifest, versions and CURRENT, atomic writes, refusing incompatible or corrupt indexes."""

import json
import shutil

import pytest

from indexer.build import CorpusError, build_index
from indexer.store import IndexIncompatible, IndexLoadError, IndexNotFound, load_index, read_manifest
from tests.conftest import CORPUS


def test_manifest_records_what_was_built(fake_index):
    m = read_manifest(fake_index)
    assert m["schema_version"] == 3 and m["package_version"]
    assert m["model"]["name"] == "fake-hash-embedder" and m["model"]["dim"] == 64
    assert m["chunker"]["target_tokens"] > 0 and m["chunker"]["max_pieces"] == 256
    assert m["counts"]["truncated_chunks"] == 0
    assert m["counts"]["chunks"] == len(load_index(fake_index).chunks)
    assert "openinfra-annual-report-2023.md" in m["corpus"]["files"]
    assert set(m["files"]) >= {"chunks.jsonl", "documents.json", "dense.faiss", "sentences.npy"}
    assert m["built_at"] and m["index_version"] and m["warnings"]
    assert (fake_index / "CURRENT").read_text().strip() == m["index_version"]
    assert (fake_index / "versions" / m["index_version"] / "manifest.json").is_file()


def test_refuses_another_model_or_schema(fake_index, tmp_path):
    with pytest.raises(IndexIncompatible, match="python -m indexer build"):
        load_index(fake_index, model_name="sentence-transformers/all-MiniLM-L6-v2")
    copy = tmp_path / "idx"
    shutil.copytree(fake_index, copy)
    mf = load_index(copy).path / "manifest.json"
    m = json.loads(mf.read_text())
    m["schema_version"] = 999
    mf.write_text(json.dumps(m))
    with pytest.raises(IndexIncompatible, match="schema version 999"):
        load_index(copy)


def test_refuses_a_corrupt_file(fake_index, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(fake_index, copy)
    with open(load_index(copy).path / "chunks.jsonl", "a") as f:
        f.write("\n")
    with pytest.raises(IndexLoadError, match="checksum"):
        load_index(copy)


def test_missing_index_says_how_to_build(tmp_path):
    with pytest.raises(IndexNotFound, match="python -m indexer build"):
        load_index(tmp_path / "nothing")


def test_failed_build_leaves_the_old_index_untouched(fake_index, tmp_path, fake_embedder, monkeypatch):
    out = tmp_path / "index"
    shutil.copytree(fake_index, out)
    before = read_manifest(out)

    import indexer.store as store

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.np, "save", boom)
    with pytest.raises(RuntimeError):
        build_index(CORPUS, out, fake_embedder)
    assert read_manifest(out) == before
    assert load_index(out).version == before["index_version"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
    assert [p.name for p in (out / "versions").iterdir()] == [before["index_version"]]  # no temporary directory


def test_corpus_errors(tmp_path, fake_embedder):
    with pytest.raises(CorpusError, match="does not exist"):
        build_index(tmp_path / "none", tmp_path / "out", fake_embedder)
    (tmp_path / "c").mkdir()
    with pytest.raises(CorpusError, match="no .md or .jsonl"):
        build_index(tmp_path / "c", tmp_path / "out", fake_embedder)
    (tmp_path / "c" / "bad.jsonl").write_text('{"id": "1", "text": "ok"}\nnot json\n')
    with pytest.raises(CorpusError, match="bad.jsonl:2"):
        build_index(tmp_path / "c", tmp_path / "out", fake_embedder)
    assert not (tmp_path / "out").exists()


def test_jsonl_corpus_is_indexed(tmp_path, fake_embedder):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "docs.jsonl").write_text(
        '{"_id": "d1", "title": "Zebras", "text": "Zebras have stripes."}\n'
        '{"id": "d2", "title": "Quokkas", "text": "Quokkas smile.", "url": "https://x.test/q"}\n')
    build_index(tmp_path / "c", tmp_path / "out", fake_embedder)
    idx = load_index(tmp_path / "out")
    assert [c["doc_id"] for c in idx.chunks] == ["d1", "d2"]
    assert idx.chunks[1]["url"] == "https://x.test/q" and idx.chunks[1]["line_start"] == 2
