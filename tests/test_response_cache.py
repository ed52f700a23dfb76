"""The /v1/search response cache: the same bytes as a computed answer (took_ms aside, which stays per request),
keyed by index version and request, counted in /metrics, bounded, and off with REPORTQA_RESPONSE_CACHE=0."""

from __future__ import annotations

import json

from fastapi.encoders import jsonable_encoder

from service.response_cache import CachedBody, ResponseCache
from tests.conftest import ADMIN_TOKEN, MARKER_QUERY, copy_root, make_client

QUERIES = [("GET", {"q": "who chairs the board?"}), ("GET", {"q": "kata containers", "mode": "lexical", "k": 3}),
           ("GET", {"q": "OpenInfra Days", "mode": "dense", "k": 50}),
           ("POST", {"query": "  sponsors of \"OpenInfra\" \\ Summit  ", "k": 4}),
           ("POST", {"query": "members", "filters": {"section": "OpenInfra Foundation Membership Growth"}})]


def _send(c, method: str, params: dict):
    return c.get("/v1/search", params=params) if method == "GET" else c.post("/v1/search", json=params)


def _without_took(raw: bytes) -> dict:
    body = json.loads(raw)
    assert isinstance(body.pop("took_ms"), float)
    return body


def _cache_counts(c) -> dict[str, float]:
    out = {}
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("reportqa_response_cache_total{"):
            out[line.split('result="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_the_body_is_fastapis_serialization_of_the_same_answer(fake_index, fake_embedder):
    """Cut around took_ms and put back together, the bytes are what FastAPI sent for the returned dict."""
    from service.results import search_response
    from service.routes.search import RESPONSE, cacheable_body

    with make_client(fake_index, fake_embedder) as c:
        r = c.app.state.resources.snapshot.retriever
        for q in ["who chairs the board?", 'a "took_ms":-1.25e-300 query', "naïve — café"]:
            out = search_response(r, q, k=5)
            expected = RESPONSE.dump_json(RESPONSE.validate_python(out))  # FastAPI's dump_json path
            assert cacheable_body(out).body(out["took_ms"]) == expected
            assert json.loads(expected) == jsonable_encoder(out)


def test_repeated_requests_are_answered_from_the_cache_with_the_same_body(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, response_cache=0) as off, \
            make_client(fake_index, fake_embedder) as on:
        assert _cache_counts(off) == _cache_counts(on) == {"hit": 0, "miss": 0}  # shown from the start
        for method, params in QUERIES:
            ref = _send(off, method, params)
            first, again = _send(on, method, params), _send(on, method, params)
            assert ref.status_code == first.status_code == again.status_code == 200
            assert _without_took(ref.content) == _without_took(first.content) == _without_took(again.content)
            assert again.headers["content-type"] == "application/json"
            assert _send(off, method, params).status_code == 200
        assert _cache_counts(on) == {"hit": len(QUERIES), "miss": len(QUERIES)}
        assert len(on.app.state.response_cache) == len(QUERIES)
        assert len(off.app.state.response_cache) == 0 and _cache_counts(off) == {"hit": 0, "miss": 0}
        # GET and POST of the same request share an entry; a query is keyed after stripping, k and mode count
        assert on.post("/v1/search", json={"query": " who chairs the board? "}).status_code == 200
        assert on.get("/v1/search", params={"q": "who chairs the board?", "k": 9}).status_code == 200
        assert _cache_counts(on) == {"hit": len(QUERIES) + 1, "miss": len(QUERIES) + 1}
        # errors are not kept: the same bad request is refused again
        for _ in range(2):
            assert on.get("/v1/search", params={"q": "board", "doc_id": "no-such-doc"}).status_code == 422
        assert _cache_counts(on)["miss"] == len(QUERIES) + 1


def test_a_reload_never_serves_the_old_versions_answers(two_versions, fake_embedder, tmp_path):
    root, a, b = copy_root(two_versions, tmp_path / "index")
    with make_client(root, fake_embedder, admin_token=ADMIN_TOKEN) as c:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for version, marker in ((a, "census-alpha"), (b, "census-bravo"), (a, "census-alpha")):
            if c.get("/readyz").json()["index_version"] != version:
                assert c.post("/v1/admin/reload", headers=auth, json={"version": version}).status_code == 200
            for _ in range(2):  # computed, then from the cache
                body = c.get("/v1/search", params={"q": MARKER_QUERY, "k": 3}).json()
                assert body["index_version"] == version
                assert body["results"][0]["citation"]["doc_id"] == marker
        assert _cache_counts(c) == {"hit": 3, "miss": 3}


def test_the_rate_limit_applies_to_answers_from_the_cache(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, rate_limit=0.01, rate_burst=2) as c:
        codes = [c.get("/v1/search", params={"q": "kata"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert _cache_counts(c) == {"hit": 1, "miss": 1}


def test_the_cache_is_a_bounded_lru_per_index_version():
    cache = ResponseCache(2, max_bytes=100)
    key = lambda v, q: (v, q, 10, "hybrid", None, None)  # noqa: E731
    body = CachedBody(b"{", b"}" * 19)  # 20 bytes
    cache.put(key("v1", "a"), body)
    cache.put(key("v1", "b"), body)
    assert cache.get(key("v1", "a")) is body  # a is now the most recent
    cache.put(key("v1", "c"), body)  # over 2 entries: b, the least recent, goes
    assert cache.get(key("v1", "b")) is None and cache.get(key("v1", "c")) is body and len(cache) == 2
    cache.put(key("v1", "big"), CachedBody(b"{", b"}" * 100))  # larger than the whole cache: not kept
    assert cache.get(key("v1", "big")) is None and len(cache) == 2
    big = ResponseCache(10, max_bytes=50)
    for q in "abc":
        big.put(key("v1", q), body)
    assert len(big) == 2  # 60 bytes > 50: the oldest went
    assert cache.get(key("v2", "a")) is None and len(cache) == 0  # another version: v1's answers are dropped
    off = ResponseCache(0)
    off.put(key("v1", "a"), body)
    assert not off.enabled and off.get(key("v1", "a")) is None and len(off) == 0
    cache.put(key("v2", "a"), body)
    cache.clear()
    assert len(cache) == 0 and cache.get(key("v2", "a")) is None
    assert CachedBody(b'{"took_ms":', b"}").body(1.5) == b'{"took_ms":1.5}'
