"""`python -m eval.profile`: where the time of one hybrid search and one /v1/ask goes.

Each stage is timed on its own over the report questions (new queries: the query-vector and response caches are
cleared before each), then the whole request is timed through the ASGI app in-process, called directly on one
event loop as uvicorn calls it (routing, middleware, dependencies, validation, JSON; no HTTP parsing, no test
client), so that "framework" is what the app adds on top of the stages. A repeated search (answered from the
response cache) is timed the same way. Prints a table of median milliseconds per stage and one JSON line;
asserts nothing.

    python -m eval.profile --index index            # the index root `make serve` uses
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from eval.datasets import load_report_set


def _median_ms(fn: Callable[[object], object], inputs: list, setup: Callable[[], None] | None = None) -> float:
    times = []
    for x in inputs:
        if setup:
            setup()
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


async def _amedian_ms(fn, inputs: list, setup: Callable[[], None] | None = None) -> float:
    times = []
    for x in inputs:
        if setup:
            setup()
        t = time.perf_counter()
        await fn(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def asgi_caller(app):
    """`await call(method, path, query_string, body)`: one request straight into the ASGI app; the status."""

    async def call(method: str, path: str, query: str = "", body: bytes = b"") -> int:
        headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"eval.profile")]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "headers": headers, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 8000)}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"]

    return call


async def _profile(index: Path, n: int) -> dict:
    from pydantic import TypeAdapter

    from service.config import Settings
    from service.main import create_app
    from service.results import search_response
    from service.schemas import AskResponse, SearchResponse

    questions = [q.text for q in load_report_set("dev").queries + load_report_set("test").queries][:n]
    app = create_app(Settings(index_dir=index), background_load=False)
    call = asgi_caller(app)
    search_json, ask_json = TypeAdapter(SearchResponse), TypeAdapter(AskResponse)
    out: dict[str, dict[str, float]] = {"search": {}, "ask": {}}
    async with app.router.lifespan_context(app):
        snap = app.state.resources.snapshot
        r = snap.retriever
        responses = getattr(app.state, "response_cache", None)  # None: a version without one

        def clear() -> None:
            r.clear_cache()
            if responses is not None:
                responses.clear()

        vecs = {q: r.encode_query(q) for q in questions}
        lex = {q: r.lexical_scores(q) for q in questions}
        s = out["search"]
        s["encode"] = _median_ms(r.encode_query, questions, setup=r.clear_cache)
        s["bm25"] = _median_ms(r.lexical_scores, questions)
        s["fusion + top-k"] = _median_ms(lambda q: r.search(q, k=10, query_vec=vecs[q], lexical=lex[q]), questions)
        for q in questions:
            r.encode_query(q)  # search_response below: the vector is known (cached)
        whole = _median_ms(lambda q: search_response(r, q, k=10), questions)
        s["highlights + citations"] = max(0.0, whole - s["bm25"] - s["fusion + top-k"])
        bodies = {q: search_response(r, q, k=10) for q in questions}
        s["validate + JSON"] = _median_ms(
            lambda q: search_json.dump_json(search_json.validate_python(bodies[q])), questions)
        get = {q: urlencode({"q": q, "k": 10}) for q in questions}
        for q in questions[:5]:
            await call("GET", "/v1/search", get[q])  # warm up
        total = await _amedian_ms(lambda q: call("GET", "/v1/search", get[q]), questions, setup=clear)
        s["framework (rest of the request)"] = max(0.0, total - sum(s.values()))
        s["total, in-process ASGI"] = total
        for q in questions:
            await call("GET", "/v1/search", get[q])
        s["total, repeated query (response cache)"] = await _amedian_ms(
            lambda q: call("GET", "/v1/search", get[q]), questions)

        a = out["ask"]
        a["encode"] = s["encode"]
        a["bm25 + fusion"] = s["bm25"] + s["fusion + top-k"]
        answers = {}

        def ask(q: str) -> None:
            answers[q] = snap.answerer.ask(q, 5)

        whole = _median_ms(ask, questions, setup=r.clear_cache)
        a["answer: sentences, features, context packing"] = max(0.0, whole - a["encode"] - a["bm25 + fusion"])
        a["validate + JSON"] = _median_ms(
            lambda q: ask_json.dump_json(ask_json.validate_python(answers[q].as_dict())), questions)
        posts = {q: json.dumps({"question": q}).encode() for q in questions}
        total = await _amedian_ms(lambda q: call("POST", "/v1/ask", body=posts[q]), questions, setup=r.clear_cache)
        a["framework (rest of the request)"] = max(0.0, total - whole - a["validate + JSON"])
        a["total, in-process ASGI"] = total
    return out


def profile(index: Path, n: int = 60) -> dict:
    return asyncio.run(_profile(index, n))


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
