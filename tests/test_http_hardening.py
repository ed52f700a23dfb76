"""Hostile input, limits, headers, metrics labels and the OpenAPI description, in-process (fake embedder)."""

import json
from urllib.parse import quote

import pytest

from tests.conftest import DOC_ID, make_client

HOSTILE = ["kata \ud800", "\udfff", "a\ud83d", "nul\x00byte", "\u202eRTL override\u202c", "\u200f\u200e\u061c",
           "\ufeffbom", "\x00" * 50, "😀 emoji pair", "\u0301\u0301\u0301", "a\r\nb\tc", "<script>x</script>",
           "\uffff\ufffe", "%00%ff", "\\ud800", "'; DROP TABLE chunks;--", "\U0010ffff"]


def _body(s: str) -> bytes:
    """JSON text as a client could send it: lone surrogates as \\u escapes (json.dumps does that)."""
    return json.dumps(s).encode()


def post(client, path: str, raw: bytes):
    return client.post(path, content=raw, headers={"content-type": "application/json"})


@pytest.mark.parametrize("text", HOSTILE)
def test_any_json_string_is_a_200_or_a_4xx_in_every_field(fake_client, text):
    s = _body(text).decode()
    probes = [
        ("/v1/search", '{"query": @S@, "mode": "hybrid"}'),
        ("/v1/search", '{"query": @S@, "mode": "lexical"}'),
        ("/v1/search", '{"query": @S@, "mode": "dense"}'),
        ("/v1/search", '{"query": "kata", "filters": {"doc_id": @S@}}'),
        ("/v1/search", '{"query": "kata", "filters": {"section": @S@}}'),
        ("/v1/search", '{@S@: 1, "query": "kata"}'),
        ("/v1/search", '{"query": "kata", "mode": @S@}'),
        ("/v1/ask", '{"question": @S@}'),
        ("/v1/ask", '{"question": "Who chairs the board?", "history": [{"role": "user", "content": @S@}]}'),
        ("/v1/ask", '{"question": "Who chairs the board?", "encoding": @S@}'),
        ("/v1/ask", '{"question": "Who?", "history": [{"role": @S@, "content": "x"}]}'),
    ]
    for path, template in probes:
        raw = template.replace("@S@", s)
        r = post(fake_client, path, raw.encode())
        assert r.status_code < 500, (path, raw, r.text)
        r.json()  # a well-formed JSON body
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            assert r.status_code == 422, (path, raw)
    # a query string carries bytes: a surrogate arrives as its (invalid) UTF-8 bytes, e.g. %ED%A0%80
    raw = quote(text.encode("utf-8", "surrogatepass"))
    for qs in (f"q={raw}", f"q=kata&doc_id={raw}", f"q=kata&section={raw}", f"q=k&mode={raw}"):
        r = fake_client.get(f"/v1/search?{qs}")
        assert r.status_code < 500 and r.json()


def test_lone_surrogate_is_refused_clearly_and_the_connection_stays_usable(fake_client):
    r = post(fake_client, "/v1/search", b'{"query": "kata \\ud800", "mode": "lexical"}')
    assert r.status_code == 422
    err = r.json()
    assert err["detail"][0]["type"] == "lone_surrogate" and err["detail"][0]["loc"] == ["body", "query"]
    assert "lone surrogate" in err["message"] and "query" in err["message"]
    assert fake_client.post("/v1/search", json={"query": "kata", "mode": "lexical"}).status_code == 200
    # a surrogate pair is one character, and fine
    assert post(fake_client, "/v1/search", b'{"query": "kata \\ud83d\\ude00"}').status_code == 200


def test_nul_and_rtl_marks_are_searched_not_refused(fake_client):
    r = fake_client.post("/v1/search", json={"query": "Kata\x00 Containers \u202e", "mode": "lexical"})
    assert r.status_code == 200 and r.json()["query"] == "Kata\x00 Containers \u202e"


@pytest.mark.parametrize("body,field", [
    ({"query": "x", "k": True}, "k"), ({"query": "x", "k": "3"}, "k"), ({"query": "x", "k": 2.0}, "k"),
    ({"query": "x" * 10_001}, "query"), ({"query": "x", "filters": {"doc_id": "d" * 1001}}, "doc_id"),
])
def test_strict_ints_and_schema_ceilings(fake_client, body, field):
    r = fake_client.post("/v1/search", json=body)
    assert r.status_code == 422 and field in r.json()["message"], r.text


@pytest.mark.parametrize("path,params,field", [
    ("/v1/search", {"q": "kata", "k": "5.0"}, "k"), ("/v1/search", {"q": "kata", "k": "1e1"}, "k"),
    ("/v1/index", {"offset": "0.0"}, "offset"), ("/v1/index", {"limit": "2.5"}, "limit"),
])
def test_integer_query_parameters_are_digits(fake_client, path, params, field):
    """An integer query parameter is written with digits (the schema's `integer`): "5.0" is a 422 naming it,
    not read as 5 (schemathesis sent `offset=0.0` and was answered 200)."""
    r = fake_client.get(path, params=params)
    assert r.status_code == 422 and field in r.json()["message"] and "whole number" in r.json()["message"], r.text
    assert fake_client.get(path, params={**params, field: " 3 " if field != "offset" else "+0"}).status_code == 200


def test_ask_strict_ints_and_history_limits(fake_client):
    q = "Who chairs the board?"
    for body in ({"question": q, "k": True}, {"question": q, "max_context_tokens": "600"}):
        assert fake_client.post("/v1/ask", json=body).status_code == 422
    turns = [{"role": "user", "content": "x"}] * 101  # over the schema's ceiling
    assert fake_client.post("/v1/ask", json={"question": q, "history": turns}).status_code == 422
    r = fake_client.post("/v1/ask", json={"question": q, "history": turns[:11]})  # over the setting (10)
    assert r.status_code == 422 and "limit is 10" in r.json()["message"]


def test_query_longer_than_the_model_reads_is_refused_not_truncated(fake_client):
    long = " ".join(["w"] * 300)  # fake embedder: 300 words + 2 = 302 pieces > 256
    assert len(long) < 1000
    for mode in ("hybrid", "dense"):
        r = fake_client.post("/v1/search", json={"query": long, "mode": mode})
        assert r.status_code == 422, r.text
        assert "302 word pieces" in r.json()["message"] and "at most 256" in r.json()["message"]
        assert r.json()["detail"][0]["type"] == "query_too_long_for_model"
        assert "mode=lexical" in r.json()["message"]  # search can take it without embedding it
    r = fake_client.get("/v1/search", params={"q": long})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"]
    assert fake_client.post("/v1/search", json={"query": long, "mode": "lexical"}).status_code == 200
    r = fake_client.post("/v1/ask", json={"question": long})
    assert r.status_code == 422 and "word pieces" in r.json()["message"]
    assert "mode=lexical" not in r.json()["message"]  # /v1/ask has no lexical mode to suggest
    # a follow-up is searched with the earlier user turns: too long together is refused too, never cut
    turn = " ".join(["h"] * 260)
    r = fake_client.post("/v1/ask", json={"question": "and its members?", "history": [{"role": "user",
                                                                                        "content": turn}]})
    assert r.status_code == 422 and "word pieces" in r.json()["message"] and "history" in r.json()["message"]
    assert fake_client.post("/v1/search", json={"query": " ".join(["w"] * 254)}).status_code == 200  # 256: fits


def test_body_over_the_limit_is_a_413_before_it_is_read(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, max_body_bytes=2048) as c:
        r = c.post("/v1/ask", content=b'{"question": "' + b"x" * 5000 + b'"}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]
        assert r.headers["connection"] == "close"

        def chunks():  # no Content-Length: counted while it streams
            yield b'{"question": "'
            for _ in range(100):
                yield b"y" * 1000

        r = c.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/search", json={"query": "kata"}).status_code == 200
        m = c.get("/metrics").text
        assert 'reportqa_refusals_total{reason="body_too_large"} 2.0' in m


def test_security_headers_on_every_response(fake_client):
    for path in ("/", "/healthz", "/static/app.js", "/static/app.css", "/no/such/page", "/v1/search?q=kata",
                 "/openapi.json"):
        r = fake_client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    csp = fake_client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp


def test_the_page_has_nothing_inline_that_its_csp_would_block(fake_client):
    import re

    html = fake_client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html
    assert not re.search(r"\son\w+=|\sstyle=", html)  # no inline handlers or style attributes


def test_docs_are_served_from_local_assets(fake_client):
    for path in ("/docs", "/redoc"):
        r = fake_client.get(path)
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, no third-party favicon
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'sha256-" in fake_client.get("/docs").headers["content-security-policy"]  # its inline start-up
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = fake_client.get(f"/docs-assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 100_000


def test_docs_can_be_turned_off(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, docs=False) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200


def test_cors_is_off_by_default_and_configurable(fake_client, fake_index, fake_embedder):
    h = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in fake_client.get("/v1/search?q=kata", headers=h).headers
    with make_client(fake_index, fake_embedder, cors_origins=["https://example.org"]) as c:
        r = c.get("/v1/search?q=kata", headers=h)
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.options("/v1/search", headers={**h, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200
        r = c.get("/v1/search?q=kata", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_settings_read_comma_separated_lists(monkeypatch):
    from service.config import Settings

    monkeypatch.setenv("REPORTQA_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("REPORTQA_ALLOWED_HOSTS", "api.example.org,*.example.net")
    s = Settings()
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.allowed_hosts == ["api.example.org", "*.example.net"]
    with pytest.raises(ValueError):
        Settings(max_query_chars=20_000)  # above the schema's ceiling


def test_allowed_hosts(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, allowed_hosts=["testserver", "*.example.net"]) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "api.example.net:8000"}).status_code == 200
        r = c.get("/healthz", headers={"Host": "evil.example.com"})
        assert r.status_code == 400 and "Host" in r.json()["detail"]


def test_rate_limit_is_a_429_with_retry_after(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, rate_limit=0.01, rate_burst=2) as c:
        codes = [c.get("/v1/search", params={"q": "kata", "mode": "lexical"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.get("/v1/search", params={"q": "kata"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "per second" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200  # operations are never rate limited
        assert 'reportqa_refusals_total{reason="rate_limit"} 2.0' in c.get("/metrics").text


def test_metrics_labels_come_from_closed_sets(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder) as c:
        for i in range(20):
            c.request(f"MADEUP{i}", "/v1/search")
            c.get(f"/random/path/{i}")
        c.get("/v1/search", params={"q": "kata"})
        text = c.get("/metrics").text
        series = [line for line in text.splitlines() if line.startswith("reportqa_requests_total")]
        assert not any("MADEUP" in s or "/random" in s for s in text.splitlines())
        assert any('method="other"' in s for s in series) and any('route="unmatched"' in s for s in series)
        assert len(series) <= 5
        assert 'reportqa_requests_total{method="GET",route="/v1/search",status="200"} 1.0' in text
        for reason in ("overload", "queue_timeout", "rate_limit", "body_too_large", "body_timeout"):
            assert f'reportqa_refusals_total{{reason="{reason}"}}' in text


def test_405_names_the_allowed_methods(fake_client):
    r = fake_client.patch("/v1/search")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"  # both routes of the path
    r = fake_client.delete("/v1/ask")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert fake_client.post("/healthz").headers["allow"] == "GET, HEAD"


def test_every_error_body_has_a_message(fake_client):
    """One field for any error: `message` (a 422 summarizes its field-by-field `detail` in it)."""
    for r in (fake_client.delete("/v1/ask"), fake_client.get("/nowhere"), fake_client.post("/v1/admin/reload"),
              fake_client.post("/v1/ask", json={"question": ""})):
        assert r.status_code in (404, 405, 422) and r.json()["message"], r.text
    r = fake_client.post("/v1/ask", content=b'{"question": "unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["message"].startswith("the body is not valid JSON (at character ")
    r = fake_client.post("/v1/ask", json=["not", "an", "object"])
    assert r.status_code == 422 and r.json()["message"].startswith("body: ")


def test_openapi_describes_the_errors_and_the_configured_limits(fake_index, fake_embedder):
    with make_client(fake_index, fake_embedder, max_query_chars=500, max_history_turns=4) as c:
        spec = c.get("/openapi.json").json()
    post = spec["paths"]["/v1/search"]["post"]["responses"]
    assert {"200", "400", "408", "413", "422", "429", "503"} <= set(post)
    assert "Retry-After" in post["503"]["headers"] and "Retry-After" in post["429"]["headers"]
    assert {"200", "422", "429", "503"} <= set(spec["paths"]["/v1/ask"]["post"]["responses"])
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    for path, operations in spec["paths"].items():  # another method on any path is a documented 405
        for method, op in operations.items():
            assert "Allow" in op["responses"]["405"]["headers"], (method, path)
    schemas = spec["components"]["schemas"]
    assert schemas["SearchRequest"]["properties"]["query"]["maxLength"] == 500
    assert schemas["AskRequest"]["properties"]["question"]["maxLength"] == 500
    assert schemas["AskRequest"]["properties"]["history"]["maxItems"] == 4
    q = [p for p in spec["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "q"][0]
    assert q["schema"]["maxLength"] == 500


def test_filters_still_work(fake_client):
    r = fake_client.get("/v1/search", params={"q": "members", "doc_id": DOC_ID, "section": "openinfra-asia"})
    assert r.status_code == 200 and {x["citation"]["anchor"] for x in r.json()["results"]} == {"openinfra-asia"}


def test_metrics_aggregate_across_processes_with_prometheus_multiproc_dir(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR (read by prometheus-client at import), two worker processes' counts add up."""
    import os
    import subprocess
    import sys

    script = ("from service.metrics import Metrics; m = Metrics(); m.observe('GET', '/v1/search', 200, 0.01); "
              "m.refused('overload'); import sys; sys.stdout.buffer.write(m.render())")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True).stdout.decode()
            for _ in range(2)]
    assert 'reportqa_requests_total{method="GET",route="/v1/search",status="200"} 1.0' in outs[0]
    assert 'reportqa_requests_total{method="GET",route="/v1/search",status="200"} 2.0' in outs[1]
    assert 'reportqa_refusals_total{reason="overload"} 2.0' in outs[1]


@pytest.mark.slow
def test_hostile_text_and_long_queries_with_the_real_model(client):
    for q in ["nul\x00byte Kata", "\u202eKata Containers\u202c", "\ufeff\u200f board chair", "日本 OpenInfra",
              "\x00" * 20, "😀" * 50]:
        for mode in ("hybrid", "dense", "lexical"):
            r = client.post("/v1/search", json={"query": q, "mode": mode, "k": 3})
            assert r.status_code in (200, 422), (q, mode, r.text)
        assert client.post("/v1/ask", json={"question": q}).status_code in (200, 422)
    long = "xq7 " * 200  # 800 characters (within the character limit), far more than 256 word pieces
    r = client.post("/v1/search", json={"query": long})
    assert r.status_code == 422 and "at most 256" in r.json()["message"], r.text
    pieces = int(r.json()["message"].split(" word pieces")[0].split()[-1])
    assert pieces > 256
    assert client.post("/v1/ask", json={"question": long}).status_code == 422
    assert client.post("/v1/search", json={"query": long, "mode": "lexical"}).status_code == 200
