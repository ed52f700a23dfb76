"""`python -m eval.bench_backends`: FAISS against the Qdrant backend, for issue 13's closing note.

1. Quality, on the report question set (`--split`, default test) and on SciFact (`--scifact`, BEIR test split):
   the service's retrieval with three stores over the same index version: FAISS (exact Flat), Qdrant through
   qdrant-client's local mode (`QdrantStore`, the client code that talks to a server) and Qdrant's Rust engine
   (qdrant-edge-py, `EdgeStore`, one shard, exact scan). Per mode: the share of queries whose top 10 chunks are
   the same list as FAISS's, and nDCG@10 of each. On the report also /v1/ask: the share of questions whose
   answer (text, answerable, citations, confidence to 6 decimals) is the same as with FAISS.
2. Engine latency at `--sizes` points (default 10,000 and 100,000): random unit vectors (384-d, seeded
   normal draws normalized; not real embeddings) in FAISS Flat (one thread) and in a qdrant-edge shard
   (exact scan; one search thread), the same queries, top 10 and top 256 (the dense pool), p50/p99 over the
   second of two passes. This is the single-shard engine cost of a query only: no network, no server, no
   replication. Local mode's latency is never measured here: it is pure Python, not Qdrant's performance.

Prints the figures, then one JSON line. SciFact's index: `--scifact-index ROOT` (a built index root), or
`--scifact-vectors-from VERSION_DIR` (chunks and vectors of an existing version directory, even of an older
schema, rewritten as a current version: BM25 rebuilt, nothing embedded), else built through the eval cache
(`python -m eval run` does the same; tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("eval.bench_backends")

DEFAULT_SCIFACT = Path("../shared/datasets/scifact")
MODES = ("hybrid", "dense", "lexical")
DIM = 384
SEED = 13


class RecordingTarget:
    """An in-process target over a Retriever with a given store; remembers the top 10 chunk ids it returned."""

    def __init__(self, name: str, retriever, index_dir: Path) -> None:
        self.name = name
        self.retriever = retriever
        self.index_dir = index_dir
        self.top10: dict[tuple[str, str], list[str]] = {}
        self._answerer = None

    def reset_cache(self) -> None:
        pass  # query vectors are shared knowledge of the three stores: encoding is not what is compared

    def search(self, query: str, k: int, mode: str) -> list[dict]:
        from service.results import search_response

        results = search_response(self.retriever, query, k=k, mode=mode)["results"]
        self.top10[(mode, query)] = [r["chunk_id"] for r in results[:10]]
        return results

    def ask(self, question: str) -> dict:
        from service.ask import load_answerer

        if self._answerer is None:
            self._answerer = load_answerer(self.retriever, [self.index_dir])
        d = self._answerer.ask(question).as_dict()
        return {"answerable": d["answerable"], "text": d["answer"]["text"] if d.get("answer") else None,
                "citations": d["answer"]["citations"] if d.get("answer") else None,
                "confidence": round(float(d["confidence"]), 6)}


class CountingClient:
    """A QdrantClient whose requests (method calls) are counted: the local-mode store's requests per query."""

    def __init__(self, client) -> None:
        self._wrapped = client
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._wrapped, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            return attr(*args, **kwargs)

        return call


def stores_for(index, tmp: Path) -> tuple[dict, list]:
    """{name: store or None (FAISS: the retriever's default)} and what to close afterwards."""
    from indexer.qdrant_edge import EdgeStore, shard_from_index
    from indexer.qdrant_store import QdrantStore, collection_name, make_client, publish

    dim, vocab = int(index.manifest["model"]["dim"]), index.lexical.vocab_dict
    client = make_client()
    t0 = time.time()
    publish(client, index, alias="bench")
    log.info("local mode: %d points written in %.1f s", len(index.chunks), time.time() - t0)
    t0 = time.time()
    shard = shard_from_index(tmp / "edge", index)
    log.info("edge: %d points written in %.1f s", len(index.chunks), time.time() - t0)
    return ({"faiss": None,
             "qdrant-local": QdrantStore(CountingClient(client), collection_name("bench", index.version), dim,
                                         ntotal=len(index.chunks), vocab=vocab),
             "qdrant-edge": EdgeStore(shard, dim, len(index.chunks), vocab)},
            [client, shard])


def _overlap(got: list[str], want: list[str]) -> float:
    """Share of `want` (FAISS's top 10) that `got` holds; 1.0 when both are empty (nothing to find)."""
    return 1.0 if not want and not got else len(set(got) & set(want)) / max(len(want), len(got))


def quality(name: str, dataset, index_dir: Path, embedder, fusion, ask: bool, tmp: Path) -> dict:
    from eval.runner import evaluate_mode
    from indexer.store import load_index
    from service.retrieval import Retriever

    index = load_index(index_dir, model_name=embedder.name, dim=embedder.dim)
    stores, closers = stores_for(index, tmp)
    targets = {n: RecordingTarget(n, Retriever(index, embedder, fusion, store=s), index.path)
               for n, s in stores.items()}
    out: dict = {"dataset": name, "split": dataset.split, "queries": len(dataset.queries), "chunks": len(index.chunks),
                 "index_version": index.version, "fusion": {"alpha": fusion.alpha,
                                                             "sentence_weight": fusion.sentence_weight},
                 "modes": {}}
    for mode in MODES:
        row: dict = {}
        for n, t in targets.items():
            t0 = time.time()
            client = getattr(stores[n], "client", None)
            calls, ties = getattr(client, "calls", 0), getattr(stores[n], "tie_extensions", 0)
            r = evaluate_mode(dataset, t, mode, progress=False, fresh_cache=False)
            if isinstance(client, CountingClient):  # Qdrant requests per query, ties past the BM25 limit
                row[f"requests per query {n}"] = round((client.calls - calls) / len(dataset.queries), 3)
                row[f"bm25 tie extensions {n}"] = stores[n].tie_extensions - ties
            row[f"ndcg@10 {n}"] = round(r.metrics["ndcg@10"], 4)
            log.info("%s %s %s: nDCG@10 %.4f (%.0f s)", name, mode, n, r.metrics["ndcg@10"], time.time() - t0)
        for n in ("qdrant-local", "qdrant-edge"):
            same = [targets[n].top10[(mode, q.text)] == targets["faiss"].top10[(mode, q.text)]
                    for q in dataset.queries]
            overlap = [_overlap(targets[n].top10[(mode, q.text)], targets["faiss"].top10[(mode, q.text)])
                       for q in dataset.queries]
            row[f"top10 identical {n}"] = round(float(np.mean(same)), 4)
            row[f"top10 overlap {n}"] = round(float(np.mean(overlap)), 4)
            row[f"ndcg@10 diff {n}"] = round(abs(row[f"ndcg@10 {n}"] - row["ndcg@10 faiss"]), 4)
        out["modes"][mode] = row
    if ask:
        questions = [q.text for q in dataset.queries]
        want = [targets["faiss"].ask(q) for q in questions]
        for n in ("qdrant-local", "qdrant-edge"):
            got = [targets[n].ask(q) for q in questions]
            out[f"ask identical {n}"] = f"{sum(a == b for a, b in zip(want, got, strict=True))}/{len(questions)}"
    for c in closers:
        c.close()
    return out


def scifact_index(args, embedder, tmp: Path) -> Path:
    """The SciFact index root: given, rewritten from a version directory's vectors, or built (eval cache)."""
    if args.scifact_index:
        return args.scifact_index
    if args.scifact_vectors_from:
        return rewrite_version(args.scifact_vectors_from, tmp / "scifact-index")
    from eval.cli import DEFAULT_CACHE, beir_corpus_dir, cached_index
    from eval.datasets import load_beir

    return cached_index(beir_corpus_dir(load_beir(args.scifact, "test"), DEFAULT_CACHE), DEFAULT_CACHE,
                        "scifact", embedder)


def rewrite_version(vdir: Path, out: Path) -> Path:
    """A current-schema index root from a version directory's chunks.jsonl, dense.faiss and sentences.npy
    (any schema): BM25, catalog and row arrays computed again, nothing embedded."""
    import faiss

    from indexer.build import lexical_text
    from indexer.lexical import build_lexical, lexical_settings
    from indexer.store import write_version
    from indexer.vectors import flat_view

    vdir = Path(vdir)
    manifest = json.loads((vdir / "manifest.json").read_text(encoding="utf-8"))
    with open(vdir / "chunks.jsonl", encoding="utf-8") as f:
        chunks = [json.loads(line) for line in f if line.strip()]
    documents = json.loads((vdir / "documents.json").read_text(encoding="utf-8"))
    index = faiss.read_index(str(vdir / "dense.faiss"))
    dense = np.array(flat_view(index))  # a copy while `index` (which owns the memory) is alive
    del index
    sentences = np.load(vdir / "sentences.npy")
    bigrams = bool(manifest.get("chunker", {}).get("lexical_bigrams", True))
    lexical = build_lexical([lexical_text(c) for c in chunks], bigrams=bigrams)
    manifest = {k: v for k, v in manifest.items() if k not in ("files", "dense", "schema_version")}
    manifest["lexical"] = lexical_settings(bigrams)
    manifest["rewritten_from"] = vdir.name
    write_version(out, chunks, documents, dense.astype(np.float32), lexical, manifest,
                  sentence_vectors=sentences.astype(np.float32), keep=1)
    return out


def _pct(ms: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 99)), 3)


def latency(size: int, n_queries: int, tmp: Path) -> dict:
    """FAISS Flat and a qdrant-edge shard (exact scan) over the same random unit vectors."""
    from indexer.qdrant_edge import EdgeStore, create_shard, upsert
    from indexer.vectors import FaissStore, build_dense_index, index_spec

    rng = np.random.default_rng(SEED + size)
    v = rng.standard_normal((size, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    spec = {**index_spec(1, DIM), "reason": "exact, for the comparison"}  # Flat at every size
    faiss_store = FaissStore(build_dense_index(v, spec), spec)
    t0 = time.time()
    shard = create_shard(tmp / f"latency-{size}", DIM, threads=1)
    upsert(shard, v, [row[None, :] for row in v])
    edge = EdgeStore(shard, DIM, size)
    load_s = round(time.time() - t0, 1)
    out: dict = {"points": size, "vectors": "random unit (seeded normal draws, normalized), 384-d",
                 "edge_write_s": load_s}
    for k in (10, 256):
        for name, store in (("faiss-flat", faiss_store), ("qdrant-edge-exact", edge)):
            for _ in range(2):  # the second pass is timed
                ms = []
                for x in q:
                    t = time.perf_counter()
                    store.search(x, k)
                    ms.append((time.perf_counter() - t) * 1000)
            p50, p99 = _pct(ms)
            out[f"{name} top{k} p50_ms"], out[f"{name} top{k} p99_ms"] = p50, p99
        same = np.mean([faiss_store.search(x, k)[0].tolist() == edge.search(x, k)[0].tolist() for x in q[:50]])
        out[f"top{k} identical (edge vs faiss, 50 queries)"] = round(float(same), 3)
    shard.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="test", help="report question set split (default: test)")
    p.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT, help="BEIR SciFact directory")
    p.add_argument("--scifact-index", type=Path, default=None, help="a built SciFact index root")
    p.add_argument("--scifact-vectors-from", type=Path, default=None,
                   help="a SciFact version directory whose chunks and vectors are reused (any schema)")
    p.add_argument("--alpha", type=float, default=0.6, help="SciFact hybrid alpha (make scifact: 0.6)")
    p.add_argument("--sentence-weight", type=float, default=0.25, help="SciFact sentence weight (make scifact: 0.25)")
    p.add_argument("--sizes", default="10000,100000", help="points for the engine latency (comma-separated)")
    p.add_argument("--queries", type=int, default=200, help="queries per latency run")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: report, scifact, latency")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("bm25s", "faiss", "httpx", "indexer", "service", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=".*[Ll]ocal.*")  # local mode's notes on params it ignores

    from eval.datasets import load_beir, load_report_set
    from indexer.embed import SentenceTransformerEmbedder
    from service.retrieval import FusionConfig

    skip = set(filter(None, args.skip.split(",")))
    result: dict = {"bench": "backends"}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as td:
        tmp = Path(td)
        embedder = None if skip >= {"report", "scifact"} else SentenceTransformerEmbedder(threads=1)
        if "report" not in skip:
            from eval.cli import DEFAULT_CACHE, cached_index
            from indexer.query_adapter import query_embedder
            from service.retrieval import default_alpha

            root = cached_index(Path("corpus"), DEFAULT_CACHE, "report", embedder)
            questions = query_embedder(embedder, DEFAULT_CACHE / "encoders", threads=1)  # as the service encodes
            r = quality("report", load_report_set(args.split), root, questions,
                        FusionConfig(alpha=default_alpha(questions)), True, tmp)
            print(json.dumps(r, indent=1))
            result["report"] = r
        if "scifact" not in skip:
            root = scifact_index(args, embedder, tmp)
            fusion = FusionConfig(alpha=args.alpha, sentence_weight=args.sentence_weight)
            r = quality("scifact", load_beir(args.scifact, "test"), root, embedder, fusion, False, tmp)
            print(json.dumps(r, indent=1))
            result["scifact"] = r
        if "latency" not in skip:
            result["latency"] = []
            for size in (int(s) for s in args.sizes.split(",") if s):
                r = latency(size, args.queries, tmp)
                print(json.dumps(r, indent=1))
                result["latency"].append(r)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
