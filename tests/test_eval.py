"""The evaluation harness end to end, and the CI quality gate on the report set's test split."""

import json
from pathlib import Path

import pytest

from eval.datasets import REPORT_DIR, load_beir, load_report_set
from eval.runner import evaluate_ask, evaluate_mode
from eval.targets import HttpTarget, InProcessTarget

FLOORS = json.loads((Path(__file__).resolve().parent.parent / "eval" / "floors.json").read_text())


def test_report_question_set_is_well_formed(report_chunks):
    texts = [" ".join(c.text.lower().split()) for c in report_chunks.chunks]
    anchors = {c.anchor for c in report_chunks.chunks}
    total, unanswerable, kinds = 0, 0, set()
    for split in ("dev", "test", "fresh"):
        ds = load_report_set(split)
        for q in ds.queries:
            total += 1
            kinds.add(q.kind)
            if not q.answerable:
                unanswerable += 1
                assert not q.answers and not q.relevance
                continue
            assert q.answers and set(q.relevance) <= anchors, q.id
            for a in q.answers:  # verbatim in the report, inside a passage of a gold section
                assert any(" ".join(a.lower().split()) in t for t in texts), (q.id, a)
    assert total >= 80 and unanswerable >= 12
    assert {"factoid", "paraphrase", "multi-part", "people", "numbers"} <= kinds
    ids = [q.id for s in ("dev", "test", "fresh") for q in load_report_set(s).queries]
    assert len(ids) == len(set(ids))  # the splits do not share questions


def test_beir_loader(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "2", "text": "q two"}\n{"_id": "10", "text": "q ten"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n10\td1\t1\n2\td1\t2\n")
    ds = load_beir(tmp_path, "test")
    assert [q.id for q in ds.queries] == ["2", "10"] and ds.queries[0].relevance == {"d1": 2}
    assert ds.key == "doc_id" and ds.corpus_file.name == "corpus.jsonl"


@pytest.mark.slow
def test_quality_gate_on_the_test_split(real_index, real_embedder):
    """Hybrid retrieval and /v1/ask must stay above the floors in eval/floors.json."""
    target = InProcessTarget(real_index, embedder=real_embedder)
    ds = load_report_set("test")
    hybrid = evaluate_mode(ds, target, "hybrid", progress=False).metrics
    for metric, floor in FLOORS["hybrid"].items():
        assert hybrid[metric] >= floor, f"hybrid {metric} {hybrid[metric]:.3f} fell below {floor}"
    assert hybrid["mean_passage_tokens"] <= 150
    ask = evaluate_ask(ds, target, progress=False).metrics
    for metric, floor in FLOORS["ask"].items():
        assert ask[metric] >= floor, f"ask {metric} {ask[metric]:.3f} fell below {floor}"
    for metric, ceiling in FLOORS["ask_max"].items():
        assert ask[metric] <= ceiling, f"ask {metric} {ask[metric]:.3f} rose above {ceiling}"


@pytest.mark.slow
def test_http_target_gives_identical_numbers(client, real_index, real_embedder):
    ds = load_report_set("dev")
    ds.queries = ds.queries[:15]
    local = evaluate_mode(ds, InProcessTarget(real_index, embedder=real_embedder), "hybrid", progress=False)
    remote = evaluate_mode(ds, HttpTarget("http://testserver", client=client), "hybrid", progress=False)
    strip = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
    assert {k: v for k, v in local.metrics.items() if k not in strip} == \
        {k: v for k, v in remote.metrics.items() if k not in strip}


@pytest.mark.slow
def test_eval_cli_writes_table_json_and_plot(tmp_path, real_index, capsys):
    from eval.cli import main

    rc = main(["run", "--dataset", "report", "--split", "dev", "--index", str(real_index), "--modes",
               "lexical,hybrid,ask", "--limit", "8", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| hybrid |" in out and "| ask |" in out
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".md", ".png"]
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(report["modes"]) == {"lexical", "hybrid", "ask"}
    assert report["modes"]["hybrid"]["metrics"]["hit@1"] is not None
    assert REPORT_DIR.is_dir()
