"""`python -m eval.bench_scale --size N` (`make bench-scale SIZE=N`): a synthetic corpus of N chunks, built
from vectors that are already computed, then loaded and searched in a fresh process.

How the corpus is made (nothing is copied into the repository; SciFact is read from --scifact):
- Real material: SENTENCES_REAL sentences drawn (seeded) from SciFact abstracts and QUERIES_REAL SciFact
  claims are embedded once with the real model and cached under .cache/bench-scale/.
- A chunk is 2–5 of those sentences (drawn at random, with replacement), under a heading path
  "Report d > Section s"; documents hold CHUNKS_PER_DOC chunks, sections SECTION_CHUNKS.
- A sentence vector is its real embedding perturbed: normalize(e + σ·g), g ~ N(0, I/d), σ = SIGMA
  (cosine ≈ 0.9 with the original), so sentences repeated across chunks are near-duplicates, not copies.
  A chunk vector is the normalized sum of its sentence vectors plus a little noise of its own: what
  mean pooling over its words gives, roughly. The text is the sentences' text, so BM25 is built honestly.
- Queries are real SciFact claims: their real embeddings and their text (for BM25).

Printed: build seconds (from vectors: catalog, BM25, FAISS, writing), the index type chosen, load ("service
start") seconds and resident memory after load in a fresh process, hybrid search p50/p99 with the query vector
given (unfiltered, document filter, section filter), recall@10 of the vector store against exact search and
top-10 agreement of hybrid search with an exact store and (up to 200k chunks) with every chunk scored;
then one JSON line of those figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("eval.bench_scale")

ROOT = Path(__file__).resolve().parent.parent
SENTENCES_REAL = 4000
QUERIES_REAL = 300
CHUNKS_PER_DOC = 1000
SECTION_CHUNKS = 20
SIGMA = 0.5
SEED = 11


def _rss_mib(field: str = "VmRSS") -> float:
    """Resident memory of this process (VmRSS), or its anonymous / file-backed part (RssAnon, RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def real_material(scifact: Path, cache: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray, str, int]:
    """(sentences, their vectors, queries, their vectors, model name, dim), embedded once and cached."""
    from indexer.embed import DEFAULT_MODEL_NAME
    from indexer.text import split_sentences

    cache.mkdir(parents=True, exist_ok=True)
    f = cache / f"scifact-{SENTENCES_REAL}s-{QUERIES_REAL}q.npz"
    if f.is_file():
        z = np.load(f, allow_pickle=False)
        return (z["sentences"].tolist(), z["sentence_vectors"], z["queries"].tolist(), z["query_vectors"],
                str(z["model"]), int(z["sentence_vectors"].shape[1]))
    sentences: list[str] = []
    with open(scifact / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            sentences += [s for s in split_sentences(" ".join(rec.get("text", "").split())) if len(s.split()) >= 5]
    rng = np.random.default_rng(SEED)
    sentences = [sentences[i] for i in sorted(rng.choice(len(sentences), SENTENCES_REAL, replace=False))]
    with open(scifact / "queries.jsonl", encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh][:QUERIES_REAL]
    from indexer.embed import SentenceTransformerEmbedder

    log.info("embedding %d SciFact sentences and %d queries once (cached in %s)", len(sentences), len(queries), f)
    emb = SentenceTransformerEmbedder(threads=2)
    sv = emb.encode(sentences, batch_size=64)
    qv = emb.encode(queries, batch_size=64)
    np.savez(f, sentences=np.array(sentences), sentence_vectors=sv, queries=np.array(queries), query_vectors=qv,
             model=np.array(DEFAULT_MODEL_NAME))
    return sentences, sv, queries, qv, DEFAULT_MODEL_NAME, int(sv.shape[1])


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def synthesize(size: int, sentences: list[str], base: np.ndarray, rng: np.random.Generator
               ) -> tuple[list[dict], dict, np.ndarray, np.ndarray]:
    """(chunks, documents, chunk vectors, sentence vectors) of a synthetic corpus of `size` chunks."""
    from indexer.chunking import chunk_id

    dim = base.shape[1]
    n_sent = rng.integers(2, 6, size)
    picks = rng.integers(0, len(sentences), int(n_sent.sum()))
    starts = np.concatenate([[0], np.cumsum(n_sent)[:-1]])
    sent_vecs = np.empty((picks.size, dim), dtype=np.float32)
    block = 200_000
    for a in range(0, picks.size, block):
        p = picks[a : a + block]
        sent_vecs[a : a + p.size] = _unit(base[p] + SIGMA * rng.standard_normal((p.size, dim)).astype(np.float32)
                                          / np.sqrt(dim))
    sums = np.add.reduceat(sent_vecs, starts, axis=0)
    chunk_vecs = _unit(sums / np.linalg.norm(sums, axis=1, keepdims=True)
                       + 0.2 * rng.standard_normal((size, dim)).astype(np.float32) / np.sqrt(dim))
    chunks: list[dict] = []
    documents: dict[str, dict] = {}
    for i in range(size):
        d, s = i // CHUNKS_PER_DOC, (i % CHUNKS_PER_DOC) // SECTION_CHUNKS
        doc_id = f"reports/r{d:04d}"
        path = [f"Report {d}", f"Section {d}.{s}"]
        parts = [sentences[j] for j in picks[starts[i] : starts[i] + n_sent[i]]]
        spans, text, pos = [], "", 0
        for t in parts:
            if text:
                text += " "
                pos += 1
            spans.append([pos, pos + len(t)])
            text += t
            pos += len(t)
        chunks.append({
            "chunk_id": chunk_id(doc_id, path, text), "doc_id": doc_id, "doc_title": path[0], "section": path[1],
            "heading_path": path, "anchor": f"section-{d}-{s}", "url": None, "line_start": 1 + 3 * (i % 1000),
            "line_end": 2 + 3 * (i % 1000), "char_start": 0, "char_end": len(text), "text": text,
            "tokens": len(text.split()), "embed_text": " > ".join(path) + "\n" + text, "ordinal": i % 1000,
            "section_index": s, "sentences": spans,
        })
        doc = documents.setdefault(doc_id, {"doc_id": doc_id, "title": path[0], "url": None, "description": None,
                                            "source": f"{doc_id}.md", "sections": 0, "chunks": 0})
        doc["chunks"] += 1
        doc["sections"] = s + 1
    return chunks, documents, chunk_vecs, sent_vecs


def build(size: int, out: Path, scifact: Path, cache: Path) -> dict:
    from indexer.build import lexical_text
    from indexer.lexical import build_lexical, lexical_settings
    from indexer.store import index_version, write_version

    sentences, base, _, _, model, dim = real_material(scifact, cache)
    rng = np.random.default_rng(SEED + size)
    t0 = time.perf_counter()
    chunks, documents, cv, sv = synthesize(size, sentences, base, rng)
    gen = time.perf_counter() - t0
    log.info("generated %d chunks, %d sentence vectors in %.1fs", size, len(sv), gen)
    t0 = time.perf_counter()
    t_lex = time.perf_counter()
    lexical = build_lexical((lexical_text(c) for c in chunks), bigrams=True)
    t_lex = time.perf_counter() - t_lex
    built_at = time.time()
    manifest = {
        "index_version": index_version(built_at, {"synthetic": str(size)}),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built_at)), "built_at_unix": built_at,
        "model": {"name": model, "dim": dim, "max_pieces": 256, "normalized": True, "device": "cpu"},
        "lexical": lexical_settings(True),
        "corpus": {"path": "synthetic (eval.bench_scale)", "files": {}},
        "counts": {"documents": len(documents), "chunks": size, "sentences": int(len(sv))},
        "warnings": [],
    }
    vdir = write_version(out, chunks, documents, cv, lexical, manifest, sentence_vectors=sv, keep=1)
    seconds = time.perf_counter() - t0
    spec = json.loads((vdir / "manifest.json").read_text())["dense"]
    return {"generate_seconds": round(gen, 1), "build_seconds": round(seconds, 1),
            "bm25_seconds": round(t_lex, 1), "faiss_seconds": spec.get("build_seconds"), "index_type": spec["factory"],
            "index_params": {k: spec[k] for k in ("M", "efConstruction", "efSearch", "nlist", "nprobe", "train_points")
                             if k in spec},
            "sentence_dtype": spec.get("sentence_dtype"),
            "index_reason": spec["reason"], "sentences": int(len(sv)),
            "index_bytes": sum(p.stat().st_size for p in vdir.rglob("*") if p.is_file())}


class _NoModel:
    """The retriever's embedder when every query vector is given (no model in the measured process)."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim, self.max_pieces = name, dim, 256

    def encode(self, texts, batch_size=32, progress=False):
        raise RuntimeError("the benchmark gives every query vector")


def measure(out: Path, scifact: Path, cache: Path, verify: bool) -> dict:
    """In a fresh process: load, then time searches and compare with exact search."""
    from eval.metrics import percentile
    from indexer.store import load_index
    from indexer.vectors import FaissStore, topk
    from service.retrieval import DENSE_POOL, Retriever

    _, _, queries, qv, model, dim = real_material(scifact, cache)
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    index = load_index(out, model_name=model, dim=dim, verify=verify)
    r = Retriever(index, _NoModel(model, dim))
    start = time.perf_counter() - t0
    rss_loaded = _rss_mib()
    rss_loaded_anon, rss_loaded_file = _rss_mib("RssAnon"), _rss_mib("RssFile")
    docs = sorted(r.doc_rows)
    rng = np.random.default_rng(5)
    sections = list(r._section_pos)
    lat: dict[str, list[float]] = {"unfiltered": [], "doc": [], "section": []}
    empty = 0  # unfiltered searches with no result (a real index: a claim with no word or meaning in common)
    for rep in range(2):  # the first pass also warms the page cache of what queries touch
        for q, v in zip(queries, qv, strict=True):
            doc = docs[int(rng.integers(len(docs)))]
            sec = sections[int(rng.integers(len(sections)))]
            for name, kw in (("unfiltered", {}), ("doc", {"doc_id": doc}), ("section", {"section": sec})):
                t = time.perf_counter()
                hits = r.search(q, k=10, mode="hybrid", query_vec=v, **kw)
                ms = (time.perf_counter() - t) * 1000
                if rep:
                    lat[name].append(ms)
                if rep and not hits and name == "unfiltered":
                    empty += 1
    rss_after = _rss_mib()
    # recall@10 of the store against exact search (chunk vectors), and hybrid agreement with an exact store
    store: FaissStore = r.store  # type: ignore[assignment]
    exact = Retriever(index, _NoModel(model, dim), store=_ExactStore(store))
    rec, rec_pool, agree, agree_doc, agree_all = [], [], [], [], []
    everything = _exhaustive(index, model, dim) if len(index.chunks) <= EXHAUSTIVE_MAX else None
    for q, v in zip(queries[:100], qv[:100], strict=True):
        ex = set(topk(store.vectors @ v, 10).tolist())
        rows, _ = store.search(v, 10)
        rec.append(len(set(rows.tolist()) & ex) / 10)
        rows, _ = store.search(v, DENSE_POOL)  # as the retriever asks: its pool of candidates
        rec_pool.append(len(set(rows[:10].tolist()) & ex) / 10)
        a = [h.index for h in r.search(q, 10, query_vec=v)]
        b = [h.index for h in exact.search(q, 10, query_vec=v)]
        agree.append(_agreement(a, b))
        if everything is not None:
            c = [h.index for h in everything.search(q, 10, query_vec=v)]
            agree_all.append(_agreement(a, c))
        doc = docs[len(agree) % len(docs)]
        a = [h.index for h in r.search(q, 10, doc_id=doc, query_vec=v)]
        b = [h.index for h in exact.search(q, 10, doc_id=doc, query_vec=v)]
        agree_doc.append(_agreement(a, b))
    sweep = _parameter_sweep(store, qv[:100]) if (store.ivf or store.hnsw) else None
    return {
        "chunks": len(index.chunks), "load_seconds": round(start, 2),
        "rss_mib_before_load": round(rss0), "rss_mib_after_load": round(rss_loaded),
        "rss_mib_after_queries": round(rss_after),
        "rss_anon_mib_after_load": round(rss_loaded_anon), "rss_file_mib_after_load": round(rss_loaded_file),
        **{f"hybrid_{k}_p50_ms": round(percentile(v, 50), 2) for k, v in lat.items()},
        **{f"hybrid_{k}_p99_ms": round(percentile(v, 99), 2) for k, v in lat.items()},
        "queries": len(queries), "unfiltered_without_results": empty,
        "store_recall_at_10": round(float(np.mean(rec)), 4),
        "store_recall_at_10_in_pool": round(float(np.mean(rec_pool)), 4),
        "hybrid_top10_agreement_with_exact": round(float(np.mean(agree)), 4),
        "hybrid_doc_filter_top10_agreement_with_exact": round(float(np.mean(agree_doc)), 4),
        "hybrid_top10_agreement_with_every_chunk_scored": round(float(np.mean(agree_all)), 4) if agree_all else None,
        "index_type": index.manifest["dense"]["factory"],
        "search_parameter_sweep": sweep,
    }


def _parameter_sweep(store, qv: np.ndarray) -> list[dict]:
    """Store recall@10 against exact search and the store's own p50 / p99 (top 10) at several nprobe (IVF) or
    efSearch (HNSW) values: how the default was chosen. (The retriever asks for its pool of DENSE_POOL, so
    HNSW searches with efSearch >= DENSE_POOL whatever the setting.)"""
    from eval.metrics import percentile
    from indexer.vectors import topk

    name = "nprobe" if store.ivf else "efSearch"
    values = (256, 512, 1024, 2048) if store.ivf else (64, 128, 256, 512)
    default = store.nprobe if store.ivf else store.ef_search
    exact = [set(topk(store.vectors @ v, 10).tolist()) for v in qv]
    out = []
    for value in values:
        setattr(store, "nprobe" if store.ivf else "ef_search", value)
        rec, lat = [], []
        for v, ex in zip(qv, exact, strict=True):
            t = time.perf_counter()
            rows, _ = store.search(v, 10)
            lat.append((time.perf_counter() - t) * 1000)
            rec.append(len(set(rows[:10].tolist()) & ex) / 10)
        out.append({name: value, "recall_at_10": round(float(np.mean(rec)), 4),
                    "store_p50_ms": round(percentile(lat, 50), 2), "store_p99_ms": round(percentile(lat, 99), 2)})
    setattr(store, "nprobe" if store.ivf else "ef_search", default)
    return out


def _agreement(got: list[int], want: list[int]) -> float:
    """Share of the reference's results that are also in `got`; both empty (a filter that no passage of the
    document matches) is full agreement."""
    if not want:
        return 1.0 if not got else 0.0
    return len(set(got) & set(want)) / len(want)


EXHAUSTIVE_MAX = 200_000  # the every-chunk reference is computed up to this size


def _exhaustive(index, model: str, dim: int):
    """The retriever with every (allowed) chunk a dense candidate: what scoring everything would rank."""
    from service.retrieval import Retriever

    class Exhaustive(Retriever):
        def _dense_pool(self, q, allowed):
            rows = np.arange(self.store.ntotal, dtype=np.int64) if allowed is None else allowed
            return rows, self.dense_scores_for(rows, q)

    return Exhaustive(index, _NoModel(model, dim))


class _ExactStore:
    """The same vectors searched exhaustively: the reference for recall."""

    def __init__(self, store) -> None:
        self._s = store
        self.ntotal, self.dim = store.ntotal, store.dim

    def fetch(self, rows):
        return self._s.fetch(rows)

    def search(self, query_vec, k, allowed_rows=None):
        return self._s._exact(np.asarray(query_vec, np.float32), k, allowed_rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_scale", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=100_000, help="chunks in the synthetic corpus")
    p.add_argument("--scifact", type=Path, default=ROOT.parent / "shared" / "datasets" / "scifact")
    p.add_argument("--out", type=Path, default=None, help="index root (default .cache/bench-scale/index-SIZE)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-scale")
    p.add_argument("--no-verify", action="store_true", help="load without checking file checksums")
    p.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--index", type=Path, default=None,
                   help="measure an existing index root instead of a synthetic one (e.g. the SciFact index that "
                        "`python -m eval run --dataset scifact` builds): same queries, same figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = args.index or args.out or args.cache / f"index-{args.size}"
    if args.measure_only or args.index:
        sys.stdout.write(json.dumps(measure(out, args.scifact, args.cache, not args.no_verify)) + "\n")
        return 0
    figures: dict = {"size": args.size}
    figures.update(build(args.size, out, args.scifact, args.cache))
    cmd = [sys.executable, "-m", "eval.bench_scale", "--size", str(args.size), "--out", str(out),
           "--scifact", str(args.scifact), "--cache", str(args.cache), "--measure-only"]
    if args.no_verify:
        cmd.append("--no-verify")
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    figures.update(json.loads(res.stdout.strip().splitlines()[-1]))
    rows = [
        ("chunks / sentence vectors", f"{figures['chunks']} / {figures['sentences']}"),
        ("index type", f"{figures['index_type']} {figures['index_params'] or ''} (sentence vectors "
                       f"{figures['sentence_dtype']})"),
        ("build seconds (from vectors)", f"{figures['build_seconds']} (BM25 {figures['bm25_seconds']}, "
                                         f"FAISS {figures['faiss_seconds']})"),
        ("service start (load) seconds", figures["load_seconds"]),
        ("RSS after load / after queries, MiB", f"{figures['rss_mib_after_load']} / "
                                                 f"{figures['rss_mib_after_queries']} (after load: anonymous "
                                                 f"{figures['rss_anon_mib_after_load']}, file-backed "
                                                 f"{figures['rss_file_mib_after_load']})"),
        ("hybrid p50 / p99 ms, unfiltered", f"{figures['hybrid_unfiltered_p50_ms']} / "
                                            f"{figures['hybrid_unfiltered_p99_ms']}"),
        ("hybrid p50 / p99 ms, document filter", f"{figures['hybrid_doc_p50_ms']} / {figures['hybrid_doc_p99_ms']}"),
        ("hybrid p50 / p99 ms, section filter", f"{figures['hybrid_section_p50_ms']} / "
                                                f"{figures['hybrid_section_p99_ms']}"),
        ("store recall@10 vs exact (k=10 / pool)", f"{figures['store_recall_at_10']} / "
                                                   f"{figures['store_recall_at_10_in_pool']}"),
        ("hybrid top-10 agreement vs exact store",
         f"{figures['hybrid_top10_agreement_with_exact']} "
         f"(doc filter {figures['hybrid_doc_filter_top10_agreement_with_exact']})"),
        ("hybrid top-10 vs every chunk scored", figures["hybrid_top10_agreement_with_every_chunk_scored"]),
        *[(f"  sweep {', '.join(f'{k} {v}' for k, v in row.items())}", "") for row in
          figures.get("search_parameter_sweep") or []],
    ]
    sys.stdout.write("\n".join(f"{k:<40} {v}" for k, v in rows) + "\n")
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
