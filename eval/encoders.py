"""`python -m eval.encoders`: the three query encoders side by side on the report's questions.

For each of torch, onnx and onnx-int8 (REPORTQA_ENCODER): encode latency per new query, cosine to the torch
vectors, how many questions keep the same top-1 / top-10 as torch, and hit@1 / hit@5 / MRR@10 (an answer
string in the passage) per question set; then the cost of one query alone and inside batches. Prints
tables and one JSON line; asserts nothing. The ONNX export must exist (`python -m indexer export-onnx`).

    python -m eval.encoders --index index
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from eval.datasets import load_dataset
from eval.metrics import percentile

ENCODERS = ("torch", "onnx", "onnx-int8")
SETS = (("report", "dev"), ("report", "test"), ("report", "fresh"), ("report-external", "all"))


def _questions(external: Path) -> dict[str, list]:
    out = {}
    for name, split in SETS:
        ds = load_dataset(name, split, external_dir=external)
        out[f"{name}/{split}"] = [q for q in ds.queries]
    return out


def compare(index: Path, external: Path) -> dict:
    from service.config import Settings
    from service.state import Resources

    sets = _questions(external)
    texts = list(dict.fromkeys(q.text for qs in sets.values() for q in qs))
    runs: dict[str, dict] = {}
    for enc in ENCODERS:
        res = Resources(Settings(index_dir=index, encoder=enc, batch_wait_ms=0))
        if not res.load():
            raise SystemExit(f"error: the {enc} encoder cannot serve: {res.error}")
        r = res.snapshot.retriever
        times, vecs, tops = [], {}, {}
        for t in texts:
            r.clear_cache()
            t0 = time.perf_counter()
            vecs[t] = r.encode_query(t)
            times.append((time.perf_counter() - t0) * 1000)
            tops[t] = [h.chunk["chunk_id"] for h in r.search(t, k=10, query_vec=vecs[t])]
        quality = {}
        for name, qs in sets.items():
            answerable = [q for q in qs if q.answerable and q.answers]
            h1 = h5 = rr = 0.0
            for q in answerable:
                hits = r.search(q.text, k=10, query_vec=vecs[q.text])
                ok = [any(a.lower() in h.chunk["text"].lower() for a in q.answers) for h in hits]
                h1 += bool(ok and ok[0])
                h5 += any(ok[:5])
                rr += next((1 / (i + 1) for i, o in enumerate(ok) if o), 0.0)
            n = max(1, len(answerable))
            quality[name] = {"hit@1": h1 / n, "hit@5": h5 / n, "mrr@10": rr / n}
        batch = {}
        emb = res.snapshot.embedder
        sample = texts[:64]
        for b in (1, 8):
            t0 = time.perf_counter()
            for i in range(0, len(sample), b):
                emb.encode(sample[i : i + b], batch_size=b)
            batch[b] = (time.perf_counter() - t0) * 1000 / len(sample)
        runs[enc] = {"encode_p50_ms": percentile(times, 50), "encode_p95_ms": percentile(times, 95),
                     "vecs": vecs, "tops": tops, "quality": quality, "ms_per_query_batch": batch}
    ref = runs["torch"]
    out = {"questions": len(texts), "encoders": {}}
    for enc, run in runs.items():
        cos = [float(np.dot(run["vecs"][t], ref["vecs"][t])) for t in texts]
        out["encoders"][enc] = {
            "encode_p50_ms": round(run["encode_p50_ms"], 2), "encode_p95_ms": round(run["encode_p95_ms"], 2),
            "min_cosine_to_torch": round(min(cos), 6), "median_cosine_to_torch": round(statistics.median(cos), 6),
            "same_top1": sum(run["tops"][t][:1] == ref["tops"][t][:1] for t in texts),
            "same_top10": sum(run["tops"][t] == ref["tops"][t] for t in texts),
            "quality": {k: {m: round(v, 3) for m, v in q.items()} for k, q in run["quality"].items()},
            "ms_per_query_alone": round(run["ms_per_query_batch"][1], 2),
            "ms_per_query_batch_of_8": round(run["ms_per_query_batch"][8], 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.encoders", description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, default=Path("index"), help="index root (default: index)")
    p.add_argument("--external", type=Path, default=Path("../shared/datasets/report-external"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = compare(args.index, args.external)
    n = out["questions"]
    print(f"| encoder | encode p50 / p95 ms | alone / in a batch of 8, ms per query | min cosine to torch | "
          f"same top-1 (of {n}) | same top-10 (of {n}) |\n|---|---|---|---|---|---|")
    for enc, e in out["encoders"].items():
        print(f"| {enc} | {e['encode_p50_ms']} / {e['encode_p95_ms']} | {e['ms_per_query_alone']} / "
              f"{e['ms_per_query_batch_of_8']} | {e['min_cosine_to_torch']} | {e['same_top1']} | {e['same_top10']} |")
    print("\n| encoder | set | hit@1 | hit@5 | MRR@10 |\n|---|---|---|---|---|")
    for enc, e in out["encoders"].items():
        for name, q in e["quality"].items():
            print(f"| {enc} | {name} | {q['hit@1']:.3f} | {q['hit@5']:.3f} | {q['mrr@10']:.3f} |")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
