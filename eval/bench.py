"""`python -m eval bench`: index build time, search and ask latency, memory. Prints figures; asserts nothing.

Latency is measured in-process (what the service adds on top is HTTP parsing and JSON encoding) and, with
--url, end to end against a running service.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from eval.datasets import load_report_set
from eval.metrics import percentile


def _row(name: str, ms: list[float]) -> str:
    return (f"| {name} | {len(ms)} | {percentile(ms, 50):.2f} | {percentile(ms, 95):.2f} | "
            f"{percentile(ms, 99):.2f} |")


def healthz_under_load(url: str, questions: list[str], seconds: float = 8.0, workers: int = 4) -> str:
    """/healthz latency while `workers` threads keep the service busy with searches it has not seen."""
    import threading

    import httpx

    stop = time.perf_counter() + seconds
    done = [0]

    def load(w: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = 0
            while time.perf_counter() < stop:
                c.get("/v1/search", params={"q": f"{questions[i % len(questions)]} {w}-{i}"})
                done[0] += 1
                i += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    ms = []
    with httpx.Client(base_url=url, timeout=30) as c:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            c.get("/healthz")
            ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
    for t in threads:
        t.join()
    return (f"/healthz while {workers} clients search ({done[0] / seconds:.0f} searches/s): "
            f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms over {len(ms)} probes")


def bench(corpus: Path, repeats: int = 3, url: str | None = None) -> str:
    from eval.targets import HttpTarget, InProcessTarget
    from indexer.build import build_index
    from indexer.embed import SentenceTransformerEmbedder
    from indexer.query_adapter import query_embedder

    lines = []
    t0 = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = build_index(corpus, Path(tmp) / "index", embedder)
        build_s = time.perf_counter() - t0
        lines.append(f"model load {load_s:.2f} s; index build {build_s:.2f} s "
                     f"({summary.chunks} chunks, {summary.tokens} tokens)")
        # questions are encoded as the service encodes them: with the packaged query adapter (indexer.query_adapter)
        questions_encoder = query_embedder(embedder, Path(tmp) / "encoders")
        target = HttpTarget(url) if url else InProcessTarget(Path(tmp) / "index", embedder=questions_encoder)
        questions = [q.text for s in ("dev", "test") for q in load_report_set(s).queries]
        lines += ["", f"| {'http ' + url if url else 'in-process'} | n | p50 ms | p95 ms | p99 ms |",
                  "|---|---|---|---|---|"]
        for mode in ("lexical", "dense", "hybrid"):
            for cold in (True, False):
                ms = []
                for r in range(1 if cold else repeats):
                    for q in questions:
                        # first sight of a query (encoded, not cached): a suffix never seen before
                        q2 = f"{q} ({mode} {r})" if cold else q
                        t = time.perf_counter()
                        target.search(q2, 10, mode)
                        ms.append((time.perf_counter() - t) * 1000)
                lines.append(_row(f"search {mode} ({'new query' if cold else 'repeated query'})", ms))
        ms = []
        for q in questions:
            t = time.perf_counter()
            target.ask(q + " (ask)")  # not cached
            ms.append((time.perf_counter() - t) * 1000)
        lines.append(_row("ask (k=5, 1500-token context)", ms))
    if url:
        lines += ["", healthz_under_load(url, questions)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"peak resident memory of this process: {rss:.0f} MiB"]
    return "\n".join(lines)
