"""Retrieval at scale: the top-k helper, the vector store (exact and HNSW, filtered), the Retriever against a
brute-force reference (the scoring of every chunk that the service did before the vector store), and
incremental builds that embed only what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eval.datasets import load_report_set
from indexer.build import build_index
from indexer.embed import FakeEmbedder
from indexer.store import IndexLoadError, load_index, read_manifest
from indexer.vectors import (
    EXACT_MAX_ROWS,
    IVF_MIN_ROWS,
    FaissStore,
    build_dense_index,
    index_spec,
    sentence_dtype,
    topk,
)
from service.retrieval import FusionConfig, Retriever, UnknownFilter, _minmax
from tests.conftest import DOC_ID

# -- topk ---------------------------------------------------------------------------------------------------


def test_topk_orders_best_first_ties_by_key_and_keeps_every_tie_at_the_cut():
    s = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert topk(s, 3).tolist() == [1, 4, 0]  # ties by position
    keys = np.array([b"f", b"e", b"d", b"c", b"b", b"a"])
    # the third place is a three-way tie at 0.5: the key decides among all three, not argpartition's pick
    assert topk(s, 3, keys).tolist() == [4, 1, 5]
    assert topk(s, 10).tolist() == [1, 4, 0, 2, 5, 3]
    assert topk(s, 0).tolist() == [] and topk(np.zeros(0), 5).tolist() == []


def test_topk_agrees_with_a_full_sort():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, 5000).astype(np.float64)  # many ties
    keys = rng.permutation(5000)
    expect = sorted(range(5000), key=lambda i: (-s[i], keys[i]))[:37]
    assert topk(s, 37, keys).tolist() == expect


# -- the vector store -------------------------------------------------------------------------------------


def _unit(rng, n, d=32):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_index_type_follows_size():
    assert index_spec(39, 384)["factory"] == "Flat"
    big = index_spec(EXACT_MAX_ROWS, 384)
    assert big["factory"].startswith("HNSW") and big["efSearch"] >= 64 and "reason" in big
    huge = index_spec(1_000_000, 384)
    assert huge["factory"] == "IVF4096,SQ8" and huge["nprobe"] >= 64 and huge["row_vectors"] == "chunk_vectors.npy"
    assert huge["train_points"] < 1_000_000  # k-means on a sample: a linear build
    assert index_spec(IVF_MIN_ROWS - 1, 384)["factory"].startswith("HNSW")
    assert sentence_dtype(39) == "float32" and sentence_dtype(EXACT_MAX_ROWS) == "float16"


def _small_ivf_spec(n: int, dim: int = 32) -> dict:
    return {**index_spec(IVF_MIN_ROWS, dim), "factory": "IVF16,SQ8", "nlist": 16, "nprobe": 14, "train_points": n}


@pytest.mark.parametrize("factory", ["Flat", "HNSW32,Flat", "IVF16,SQ8"])
def test_store_filtered_search_returns_k_allowed_rows(monkeypatch, factory):
    import indexer.vectors as vectors

    rng = np.random.default_rng(1)
    v = _unit(rng, 3000)
    spec = {"Flat": index_spec(10, 32), "HNSW32,Flat": index_spec(EXACT_MAX_ROWS, 32),
            "IVF16,SQ8": _small_ivf_spec(3000)}[factory]
    index = build_dense_index(v, spec)
    store = FaissStore(index, spec, vectors=v if factory.startswith("IVF") else None)
    assert store.ivf == factory.startswith("IVF") and store.exact == (factory == "Flat")
    q = v[7] + 0.1 * _unit(rng, 1)[0]
    exact = topk(v @ q, 10)
    rows, scores = store.search(q, 10)
    assert len(set(rows.tolist()) & set(exact.tolist())) >= 9  # HNSW, IVF: approximate; Flat: exact
    assert np.allclose(store.fetch(rows), v[rows])
    for through_faiss in (False, True):
        if through_faiss:  # the IDSelector path, not the exact scan of a small filtered set
            monkeypatch.setattr(vectors, "EXACT_SCAN_MAX", 0)
        few = np.array([3, 17, 400, 1999, 2500])
        rows, scores = store.search(q, 10, few)
        assert sorted(rows.tolist()) == few.tolist()  # fewer allowed than k: all of them
        doc = np.arange(1000, 1600)  # a contiguous run: IDSelectorRange
        rows, scores = store.search(q, 10, doc)
        assert len(rows) == 10 and set(rows.tolist()) <= set(doc.tolist())
        assert rows.tolist() == doc[topk(v[doc] @ q, 10)].tolist() or factory != "Flat"
        scattered = np.arange(0, 3000, 7)  # IDSelectorBatch
        rows, _ = store.search(q, 10, scattered)
        assert len(rows) == 10 and set(rows.tolist()) <= set(scattered.tolist())
        most = np.setdiff1d(np.arange(3000), np.arange(0, 3000, 31))  # keeps most rows: through FAISS (IVF too)
        rows, _ = store.search(q, 10, most)
        assert len(rows) == 10 and set(rows.tolist()) <= set(most.tolist())
        assert len(set(rows.tolist()) & set(most[topk(v[most] @ q, 10)].tolist())) >= 9
    np.testing.assert_array_equal(store.fetch(np.array([5, 2])), v[[5, 2]])


def test_ivf_filtered_search_picks_the_cheaper_path(monkeypatch):
    """IVF with a filter: a filter whose float32 rows are fewer bytes than the codes the widened probe would
    read is scanned exactly (exact results); a filter keeping most rows goes through FAISS's IDSelector."""
    import faiss

    import indexer.vectors as vectors

    monkeypatch.setattr(vectors, "EXACT_SCAN_MAX", 0)
    rng = np.random.default_rng(3)
    v = _unit(rng, 3000)
    spec = _small_ivf_spec(3000)
    store = FaissStore(build_dense_index(v, spec), spec, vectors=v)
    calls = []
    exact = store._exact
    monkeypatch.setattr(store, "_exact", lambda q, k, rows: calls.append(len(rows)) or exact(q, k, rows))
    q = v[11]
    fifth = np.arange(0, 3000, 5)  # 600 float32 rows to read, against 16 lists of 8-bit codes: exact
    rows, _ = store.search(q, 10, fifth)
    assert calls == [600] and rows.tolist() == fifth[topk(v[fifth] @ q, 10)].tolist()
    calls.clear()
    most = np.arange(100, 3000)
    rows, _ = store.search(q, 10, most)
    assert calls == [] and len(rows) == 10 and set(rows.tolist()) <= set(most.tolist())
    assert isinstance(faiss.downcast_index(store.index), faiss.IndexIVFScalarQuantizer)


# -- the Retriever against a brute-force reference ---------------------------------------------------------


def reference_search(index, query_vec, lex, k, mode, fusion, allowed_mask=None):
    """What the retriever computed before the vector store: every chunk and sentence scored, Python sorts."""
    chunks = list(index.chunks)
    vectors = np.asarray(index.chunk_vectors) if index.chunk_vectors is not None else index.dense.reconstruct_n(
        0, index.dense.ntotal)
    counts = np.array([len(c["sentences"]) for c in chunks])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sv = np.asarray(index.sentence_vectors)
    q = query_vec.astype(np.float32)
    w = fusion.sentence_weight
    dense = (1 - w) * (vectors @ q) + w * np.maximum.reduceat(sv @ q, starts)
    allowed = allowed_mask if allowed_mask is not None else np.ones(len(chunks), bool)
    ids = [c["chunk_id"] for c in chunks]
    if mode == "dense":
        fused = dense.astype(np.float64)
    elif mode == "lexical":
        fused = lex.astype(np.float64)
    else:
        idx = np.flatnonzero(allowed)
        n = min(fusion.candidates, idx.size)
        top_d = idx[np.argsort(-dense[idx], kind="stable")[:n]]
        lex_pos = idx[lex[idx] > 0]
        top_l = lex_pos[np.argsort(-lex[lex_pos], kind="stable")[:n]]
        cand = np.union1d(top_d, top_l)
        fused = np.full(len(chunks), -np.inf)
        lx = lex[cand].astype(np.float64)
        fused[cand] = fusion.alpha * _minmax(dense[cand].astype(np.float64)) + (1 - fusion.alpha) * (
            _minmax(lx) if lx.max() > 0 else np.zeros_like(lx))
    fused = np.where(allowed, fused, -np.inf)
    rows = np.flatnonzero(np.isfinite(fused))
    if mode == "lexical":
        rows = rows[lex[rows] > 0]
    elif mode == "hybrid":
        rows = rows[(lex[rows] > 0) | (dense[rows] >= fusion.min_dense_without_terms)]
    order = sorted(rows.tolist(), key=lambda i: (-fused[i], ids[i]))[:k]
    return [(ids[i], float(fused[i])) for i in order]


def _compare(retriever: Retriever, questions: list[str], filters=((None, None),)) -> int:
    compared = 0
    chunks = list(retriever.index.chunks)
    for question in questions:
        qv = retriever.encode_query(question)
        lex = retriever.lexical_scores(question)
        for doc_id, section in filters:
            mask = np.ones(len(chunks), bool)
            if doc_id:
                mask &= np.array([c["doc_id"] == doc_id for c in chunks])
            if section:
                mask &= np.array([section.lower() == c["anchor"] or any(section.lower() == h.lower()
                                  for h in c["heading_path"]) for c in chunks])
            for mode in ("hybrid", "dense", "lexical"):
                got = [(h.chunk["chunk_id"], h.score) for h in
                       retriever.search(question, 10, mode, doc_id, section, query_vec=qv)]
                want = reference_search(retriever.index, qv, lex, 10, mode, retriever.fusion, mask)
                assert [g[0] for g in got] == [w[0] for w in want], (question, mode, doc_id, section)
                np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-6, atol=1e-6)
                compared += 1
    return compared


def test_fake_report_index_ranks_as_brute_force(fake_index, fake_embedder):
    r = Retriever(load_index(fake_index), fake_embedder)
    qs = [q.text for q in load_report_set("test").queries]
    filters = ((None, None), (DOC_ID, None), (None, "Kata Containers"), (DOC_ID, "openinfra-asia"))
    assert _compare(r, qs, filters) == len(qs) * 3 * 4


@pytest.mark.slow
def test_report_test_split_top10_identical_to_brute_force(real_index, real_embedder):
    """The report's `test` split, every mode, with the real model: the same top 10 in the same order."""
    r = Retriever(load_index(real_index), real_embedder)
    qs = [q.text for q in load_report_set("test").queries]
    assert _compare(r, qs) == len(qs) * 3


def test_sentence_scores_for_matches_the_full_array(fake_index, fake_embedder):
    r = Retriever(load_index(fake_index), fake_embedder)
    qv = r.encode_query("board of directors")
    full = r.sentence_scores(qv)
    rows = [0, 5, 17]
    for row, scores in r.sentence_scores_for(rows, qv).items():
        a = int(r.sentence_starts[row])
        np.testing.assert_allclose(scores, full[a : a + len(r.chunks[row]["sentences"])], rtol=1e-6)


def test_unknown_filters_raise(fake_index, fake_embedder):
    r = Retriever(load_index(fake_index), fake_embedder)
    with pytest.raises(UnknownFilter):
        r.search("x", doc_id="nope")
    with pytest.raises(UnknownFilter):
        r.search("x", section="no such heading anywhere")


# -- many documents: HNSW with filters --------------------------------------------------------------------


def _corpus(d: Path, docs: dict[str, str]) -> Path:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, text in docs.items():
        (d / f"{name}.md").write_text(text, encoding="utf-8")
    return d


WORDS = ("river mountain forest harbor census quokka zebra lantern copper violin granite meadow orbit "
         "glacier saffron tundra beacon canyon falcon ember").split()


BIG = [a + b for a in WORDS for b in WORDS]


def _doc(seed: int, sections: int = 4, paragraphs: int = 3) -> str:
    rng = np.random.default_rng(seed)
    out = [f"# Report {seed}\n"]
    for s in range(sections):
        out.append(f"## Part {seed}-{s}\n")
        for _ in range(paragraphs):
            words = [*rng.choice(BIG, 30), *rng.choice(WORDS, 8)]
            out.append(" ".join(rng.permutation(words)).capitalize() + ".\n")
    return "\n".join(out)


@pytest.mark.parametrize("kind", ["HNSW", "IVF"])
def test_filtered_ann_search_returns_k_results(tmp_path, monkeypatch, kind):
    """A corpus indexed with HNSW or IVF (thresholds lowered): a document filter and a section filter that keep
    few chunks still return k results, all inside the filter, the same as exact scoring of the filtered rows.
    Above the float16 threshold sentence vectors are stored as float16; IVF writes chunk_vectors.npy."""
    import indexer.vectors as vectors

    monkeypatch.setattr(vectors, "EXACT_MAX_ROWS", 50)
    monkeypatch.setattr(vectors, "SENTENCE_FP16_MIN_ROWS", 50)
    if kind == "IVF":
        monkeypatch.setattr(vectors, "IVF_MIN_ROWS", 60)
    corpus = _corpus(tmp_path / "c", {f"doc{i:02d}": _doc(i) for i in range(20)})
    emb = FakeEmbedder()
    build_index(corpus, tmp_path / "idx", emb)
    m = read_manifest(tmp_path / "idx")
    assert m["dense"]["factory"].startswith(kind) and m["dense"]["sentence_dtype"] == "float16"
    idx = load_index(tmp_path / "idx")
    assert idx.sentence_vectors.dtype == np.float16
    assert (idx.path / "chunk_vectors.npy").is_file() == (kind == "IVF")
    r = Retriever(idx, emb)
    assert r.store.hnsw == (kind == "HNSW") and r.store.ivf == (kind == "IVF")
    hits = r.search("zebra quokka lantern", k=5, doc_id="doc07")
    assert len(hits) == 5 and {h.chunk["doc_id"] for h in hits} == {"doc07"}
    n_section = len([c for c in r.chunks if "part 3-2" in [h.lower() for h in c["heading_path"]]])
    hits = r.search("copper violin", k=10, section="Part 3-2", mode="dense")
    assert len(hits) == min(10, n_section) and all(h.chunk["section"] == "Part 3-2" for h in hits)
    # the filtered rows are few: scored exactly, as the brute-force reference does
    qs = ["copper violin granite", "river census", "falcon ember orbit"]
    _compare(r, qs, ((None, "Part 3-2"), ("doc11", None)))
    if kind == "IVF":  # the row vectors are required beside an IVF index, checksums on or off
        (idx.path / "chunk_vectors.npy").unlink()
        for verify in (True, False):
            with pytest.raises(IndexLoadError, match="chunk_vectors.npy"):
                load_index(tmp_path / "idx", verify=verify)


# -- incremental builds -----------------------------------------------------------------------------------


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts, batch_size=32, progress=False):
        self.texts += list(texts)
        return super().encode(texts, batch_size, progress)


def _results(index_dir: Path, emb, queries) -> list:
    r = Retriever(load_index(index_dir), emb)
    return [[(h.chunk["chunk_id"], round(h.score, 6)) for h in r.search(q, 10, mode)]
            for q in queries for mode in ("hybrid", "dense", "lexical")]


def test_incremental_build_embeds_only_what_changed(tmp_path):
    docs = {f"doc{i}": _doc(100 + i) for i in range(5)}
    corpus = _corpus(tmp_path / "c", docs)
    emb = CountingEmbedder()
    build_index(corpus, tmp_path / "idx", emb)
    first = read_manifest(tmp_path / "idx")
    assert first["embedding"]["chunks"]["reused"] == 0 and first["embedding"]["sentences"]["reused"] == 0

    # change one document: only its chunks and sentences are embedded
    docs["doc2"] = _doc(999)
    _corpus(corpus, docs)
    emb.texts.clear()
    build_index(corpus, tmp_path / "idx", emb)
    m = read_manifest(tmp_path / "idx")
    idx = load_index(tmp_path / "idx")
    doc2 = [c for c in idx.chunks if c["doc_id"] == "doc2"]
    doc2_texts = {c["embed_text"] for c in doc2} | {
        (" > ".join(c["heading_path"]) + "\n" + c["text"][a:b]) for c in doc2 for a, b in c["sentences"]}
    assert emb.texts and set(emb.texts) <= doc2_texts
    assert m["embedding"]["chunks"] == {"reused": m["counts"]["chunks"] - len(doc2), "embedded": len(doc2)}
    assert m["embedding"]["sentences"]["embedded"] == len(emb.texts) - len(doc2)
    assert m["embedding"]["reused_from"] == first["index_version"]

    # remove a document: its chunks are gone, nothing is embedded
    del docs["doc4"]
    _corpus(corpus, docs)
    emb.texts.clear()
    build_index(corpus, tmp_path / "idx", emb)
    idx = load_index(tmp_path / "idx")
    assert emb.texts == []
    assert "doc4" not in {c["doc_id"] for c in idx.chunks} and "doc4" not in idx.documents
    assert "doc4" not in idx.catalog["documents"]

    # the same results as a build from scratch
    scratch = CountingEmbedder()
    build_index(corpus, tmp_path / "scratch", scratch, reuse=False)
    assert len(scratch.texts) == json.loads(json.dumps(read_manifest(tmp_path / "scratch")["counts"]))["chunks"] + \
        read_manifest(tmp_path / "scratch")["counts"]["sentences"]
    queries = ["zebra quokka", "copper violin granite meadow", "Part 2", "falcon"]
    assert _results(tmp_path / "idx", emb, queries) == _results(tmp_path / "scratch", scratch, queries)
    a, b = load_index(tmp_path / "idx"), load_index(tmp_path / "scratch")
    np.testing.assert_array_equal(np.asarray(a.sentence_vectors), np.asarray(b.sentence_vectors))
    assert a.catalog == b.catalog


def test_other_model_reuses_nothing(tmp_path):
    corpus = _corpus(tmp_path / "c", {"d": _doc(1)})
    build_index(corpus, tmp_path / "idx", FakeEmbedder())
    other = CountingEmbedder()
    other.name = "another-model"
    build_index(corpus, tmp_path / "idx", other)
    assert read_manifest(tmp_path / "idx")["embedding"]["chunks"]["reused"] == 0


def test_fusion_config_is_shared(fake_index, fake_embedder):
    r = Retriever(load_index(fake_index), fake_embedder, FusionConfig(alpha=0.3))
    assert r.fusion.alpha == 0.3 and len(r.search("board", 3)) == 3


def test_build_time_document_frequencies_equal_tokenizing_every_chunk(fake_index, fake_embedder):
    from collections import Counter

    from indexer.text import STOPWORDS, stem, token_spans

    r = Retriever(load_index(fake_index), fake_embedder)
    df: Counter[str] = Counter()
    for c in r.chunks:
        df.update({stem(t) for _, _, t in token_spans(c["embed_text"]) if t not in STOPWORDS})
    assert r.doc_freq == dict(df)
    assert r.common_terms == frozenset(t for t, n in df.items() if n > max(2, 0.4 * len(r.chunks)))


def test_large_index_sentence_scores_are_lazy_and_equal(fake_index, fake_embedder, monkeypatch):
    """Above FULL_SENTENCE_SCORES_MAX sentences, sentence_scores() scores a sentence when it is read (the ask
    code indexes it by sentence_starts[row] + i); the values are those of the full product."""
    import service.retrieval as retrieval

    r = Retriever(load_index(fake_index), fake_embedder)
    qv = r.encode_query("members of the board")
    full = r.sentence_scores(qv)
    monkeypatch.setattr(retrieval, "FULL_SENTENCE_SCORES_MAX", 0)
    lazy = r.sentence_scores(qv)
    assert isinstance(lazy, retrieval.LazySentenceScores) and len(lazy) == len(full)
    for i in (0, 7, len(full) - 1):
        assert abs(float(lazy[i]) - float(full[i])) < 1e-5
