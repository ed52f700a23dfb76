"""`python -m eval.profile`: where the time of one hybrid search and one /v1/ask goes.

Each stage is timed on its own over the report questions (new queries: the query-vector cache is cleared
before each), then the whole request is timed through the ASGI app in-process (routing, middleware,
dependencies, validation, JSON) so that "framework" is what the app adds on top of the stages. Prints a
table of median milliseconds per stage and one JSON line; asserts nothing.

    python -m eval.profile --index index            # the index root `make serve` uses
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from eval.datasets import load_report_set


def _median_ms(fn: Callable[[], object], inputs: list, setup: Callable[[], None] | None = None) -> float:
    times = []
    for x in inputs:
        if setup:
            setup()
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def profile(index: Path, n: int = 60) -> dict:
    from fastapi.encoders import jsonable_encoder
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app
    from service.results import search_result
    from service.schemas import AskResponse, SearchResponse

    questions = [q.text for q in load_report_set("dev").queries + load_report_set("test").queries][:n]
    app = create_app(Settings(index_dir=index), background_load=False)
    out: dict[str, dict[str, float]] = {"search": {}, "ask": {}}
    with TestClient(app) as client:
        snap = app.state.resources.snapshot
        r = snap.retriever
        clear = r.clear_cache
        vecs = {q: r.encode_query(q) for q in questions}
        lex = {q: r.lexical_scores(q) for q in questions}
        hits = {q: r.search(q, k=10, query_vec=vecs[q], lexical=lex[q]) for q in questions}
        s = out["search"]
        s["encode"] = _median_ms(r.encode_query, questions, setup=clear)
        s["bm25"] = _median_ms(r.lexical_scores, questions)
        s["fusion + top-k"] = _median_ms(lambda q: r.search(q, k=10, query_vec=vecs[q], lexical=lex[q]), questions)
        s["highlights + citations"] = _median_ms(
            lambda q: [search_result(h, i + 1, q, r.common_terms) for i, h in enumerate(hits[q])], questions)
        bodies = {q: {"query": q, "mode": "hybrid", "took_ms": 1.0, "index_version": snap.version,
                      "results": [search_result(h, i + 1, q, r.common_terms) for i, h in enumerate(hits[q])]}
                  for q in questions}
        s["validate + JSON"] = _median_ms(
            lambda q: json.dumps(jsonable_encoder(SearchResponse.model_validate(bodies[q]))), questions)
        total = _median_ms(lambda q: client.get("/v1/search", params={"q": q, "k": 10}), questions, setup=clear)
        s["framework (rest of the request)"] = max(0.0, total - sum(s.values()))
        s["total, in-process ASGI"] = total

        a = out["ask"]
        a["encode"] = s["encode"]
        a["bm25 + fusion"] = s["bm25"] + s["fusion + top-k"]
        answers = {}

        def ask(q: str) -> None:
            answers[q] = snap.answerer.ask(q, 5)

        whole = _median_ms(ask, questions, setup=clear)
        a["answer: sentences, features, context packing"] = max(0.0, whole - a["encode"] - a["bm25 + fusion"])

        def ask_json(q: str) -> None:
            body = answers[q]
            body = body.as_dict() if hasattr(body, "as_dict") else body  # AskResult, as the route sends it
            json.dumps(jsonable_encoder(AskResponse.model_validate(body)))

        a["validate + JSON"] = _median_ms(ask_json, questions)
        total = _median_ms(lambda q: client.post("/v1/ask", json={"question": q}), questions, setup=clear)
        a["framework (rest of the request)"] = max(0.0, total - whole - a["validate + JSON"])
        a["total, in-process ASGI"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.profile", description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, default=Path("index"), help="index root (default: index)")
    p.add_argument("-n", type=int, default=60, help="questions (default 60)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = profile(args.index, args.n)
    for what, stages in out.items():
        print(f"\n| {what}: stage | median ms |\n|---|---|")
        for stage, ms in stages.items():
            print(f"| {stage} | {ms:.2f} |")
    print(json.dumps({k: {s: round(v, 3) for s, v in d.items()} for k, d in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
