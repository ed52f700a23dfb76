"""A corpus of many documents in nested folders, end to end with the fake embedder: doc ids are paths,
filters by document, and GET /v1/index pages its document list."""

from pathlib import Path

import pytest

from tests.conftest import make_client

TOPICS = ["harbour", "orchard", "library", "railway", "observatory"]
N_DOCS = 130  # more than one default page of /v1/index


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def many(tmp_path_factory, fake_embedder):
    from indexer.build import build_index

    base = tmp_path_factory.mktemp("many")
    corpus = base / "corpus"
    for i in range(N_DOCS):
        topic = TOPICS[i % len(TOPICS)]
        year = 2020 + i % 4
        _write(corpus, f"reports/{year}/{topic}-{i:03d}.md",
               f"---\ntitle: The {topic} report number {i}\n---\n# {topic.title()} {i}\n\n## Works\n\n"
               f"The {topic} works of site {i} were finished in {year}; inspectors from district {i} signed "
               f"the {topic} completion certificate.\n")
    # a setext heading, a table and a footnote in a folder of its own, and a .markdown file
    _write(corpus, "other/orgs/acme annual.md",
           "Acme annual review\n==================\n\n| Unit | Flamingos counted |\n|---|---:|\n"
           "| North lake | 412 |\n| Salt pan | 97 |\n\nThe census[^1] used drones.\n\n[^1]: Counted at dawn.\n")
    _write(corpus, "zeta.markdown", "# Zeta\n\nThe zeta document talks about quokkas on the island.\n")
    index = base / "index"
    build_index(corpus, index, fake_embedder)
    with make_client(index, fake_embedder) as c:
        yield c


def test_doc_ids_are_paths_without_extension(many):
    ids = []
    offset = 0
    while offset is not None:
        page = many.get("/v1/index", params={"offset": offset, "limit": 50}).json()
        ids += [d["doc_id"] for d in page["documents"]]
        offset = page["next_offset"]
    assert len(ids) == len(set(ids)) == N_DOCS + 2
    assert "reports/2021/orchard-001" in ids and "other/orgs/acme annual" in ids and "zeta" in ids
    assert ids == sorted(ids, key=lambda d: d)  # corpus order: by path


def test_search_cites_the_document_and_filters_by_it(many):
    r = many.get("/v1/search", params={"q": "flamingos counted north lake", "mode": "lexical", "k": 3}).json()
    top = r["results"][0]
    assert top["citation"]["doc_id"] == "other/orgs/acme annual"
    assert top["citation"]["doc_title"] == "other/orgs/acme annual"  # no front matter: the id is the title
    assert top["citation"]["section"] == "Acme annual review"
    assert "North lake | 412" in top["text"]
    doc = "reports/2023/observatory-019"
    r = many.post("/v1/search", json={"query": "works completion certificate", "k": 10,
                                      "filters": {"doc_id": doc}}).json()
    assert r["results"] and {x["citation"]["doc_id"] for x in r["results"]} == {doc}
    assert r["results"][0]["citation"]["doc_title"] == "The observatory report number 19"
    assert r["results"][0]["citation"]["heading_path"] == ["Observatory 19", "Works"]
    bad = many.get("/v1/search", params={"q": "works", "doc_id": "reports/2023/nope"})
    assert bad.status_code == 422


def test_index_pages_default_and_last(many):
    first = many.get("/v1/index").json()
    assert first["total"] == N_DOCS + 2 and first["offset"] == 0 and first["limit"] == 100
    assert len(first["documents"]) == 100 and first["next_offset"] == 100
    assert {"index_version", "model", "chunks", "counts", "warnings"} <= set(first)  # the other fields stay
    last = many.get("/v1/index", params={"offset": 100}).json()
    assert len(last["documents"]) == N_DOCS + 2 - 100 and last["next_offset"] is None
    assert not {d["doc_id"] for d in first["documents"]} & {d["doc_id"] for d in last["documents"]}
    everything = many.get("/v1/index", params={"limit": 1000}).json()
    assert len(everything["documents"]) == N_DOCS + 2 and everything["next_offset"] is None
    past = many.get("/v1/index", params={"offset": 500}).json()
    assert past["documents"] == [] and past["next_offset"] is None and past["total"] == N_DOCS + 2


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": "x"},
                                    {"limit": "ten"}])
def test_bad_paging_values_are_422(many, params):
    r = many.get("/v1/index", params=params)
    assert r.status_code == 422
    assert next(iter(params)) in r.text
