"""The evaluation harness end to end, and the CI quality gate on the report set's test split."""

import json
from pathlib import Path

import pytest

from eval.datasets import (
    REPORT_DIR,
    DatasetError,
    load_beir,
    load_dataset,
    load_external_set,
    load_report_set,
    resolve_sections,
)
from eval.runner import evaluate_ask, evaluate_mode
from eval.targets import HttpTarget, InProcessTarget
from tests.conftest import EXTERNAL_DIR, ROOT, needs_external

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


@needs_external
def test_report_external_is_read_in_place_and_its_headings_map_to_anchors(report_chunks):
    ds = load_external_set("all")
    assert len(ds.queries) >= 90 and all(q.question for q in ds.queries)
    assert {q.style for q in ds.queries} >= {"chat", "numeric", "multi-hop", "near-miss", "off-topic"}
    assert all(q.answerable == bool(q.answers) for q in ds.queries)
    assert all(f.is_file() and "shared" in f.as_posix() for f in ds.files)  # not a copy in the repository
    resolve_sections(ds, [(c.heading_path[-1] if c.heading_path else "", c.anchor) for c in report_chunks.chunks])
    assert all(q.relevance for q in ds.queries if q.answerable)
    kw = load_dataset("report-external", "keywords")
    assert kw.queries and not any(q.question for q in kw.queries)
    with pytest.raises(DatasetError, match="no split"):
        load_external_set("test")


def test_a_directory_in_report_externals_layout_is_a_dataset_named_after_it(report_chunks):
    """eval/datasets/helpers-a … -t (written by helper agents from the report alone, see HELPERS.md; o to t held
    out) load like report-external: verbatim answers, headings that map to anchors, near-miss and off-topic
    questions."""
    from eval.sets import CALIBRATION_HELPER_SETS, HELD_OUT_HELPER_SETS, HELPER_SETS

    on_disk = sorted(p.name for p in (ROOT / "eval" / "datasets").glob("helpers-*"))
    assert on_disk == sorted(f"helpers-{s}" for s in HELPER_SETS + HELD_OUT_HELPER_SETS)
    assert not set(HELPER_SETS + CALIBRATION_HELPER_SETS) & set(HELD_OUT_HELPER_SETS)
    for name in on_disk:
        ds = load_dataset(str(ROOT / "eval" / "datasets" / name))
        assert ds.name == name and ds.split == "all" and ds.key == "anchor"
        assert sum(q.answerable for q in ds.queries) == 110 and len(ds.queries) == 165
        assert {q.style for q in ds.queries if not q.answerable} == {"near-miss", "off-topic"}
        resolve_sections(ds, [(c.heading_path[-1] if c.heading_path else "", c.anchor) for c in report_chunks.chunks])
        assert all(q.relevance for q in ds.queries if q.answerable)
        report = (ROOT / "corpus" / "openinfra-annual-report-2023.md").read_text(encoding="utf-8")
        assert all(a in report for q in ds.queries for a in q.answers)
    with pytest.raises(DatasetError, match="no split 'test'"):  # a split it does not have is an error, not "all"
        load_dataset(str(ROOT / "eval" / "datasets" / "helpers-a"), "test")


@needs_external
def test_calibration_fits_on_helper_sets_the_reader_never_saw_and_never_on_held_out_ones(monkeypatch, tmp_path):
    """calibrate's default sets, wherever it is run from: report dev, report-external and helper sets that the
    served reader was not trained on (so it scores them as it scores new questions), none of them held out."""
    from eval.calibrate import overlap
    from eval.cli import _parser
    from eval.sets import CALIBRATION_SETS, HELD_OUT, parse_sets, refused_sets
    from service.ask.reader import load_reader

    assert _parser().parse_args(["calibrate"]).sets == CALIBRATION_SETS
    monkeypatch.chdir(tmp_path)  # the helper sets are found from the package, not the current directory
    sets = parse_sets(CALIBRATION_SETS, EXTERNAL_DIR)
    assert [f"{d.name}:{d.split}" for d in sets] == ["report:dev", "report-external:all", "helpers-m:all",
                                                     "helpers-n:all"]
    assert refused_sets(sets, HELD_OUT) == []
    served = load_reader().meta["trained_on"]
    assert overlap(sets[2:], served) == [] and overlap(sets[:2], served)  # dev and report-external: fold readers


@pytest.mark.slow
def test_eval_cli_runs_ask_on_a_set_in_report_externals_layout(tmp_path, real_index):
    from eval.cli import main

    rc = main(["run", "--dataset", str(ROOT / "eval" / "datasets" / "helpers-b"), "--index", str(real_index),
               "--modes", "hybrid,ask", "--out", str(tmp_path), "--no-progress", "--no-plot", "--limit", "120"])
    assert rc == 0
    ask = json.loads(next(tmp_path.glob("helpers-b-all-*.json")).read_text())["modes"]["ask"]
    assert len(ask["per_query"]) == 120 and {"numeric", "near-miss"} <= set(ask["tables"]["per_style"])


@needs_external
def test_headings_are_compared_stripped_and_a_repeated_heading_gives_either_anchor():
    ds = load_external_set("keywords")
    ds.queries = ds.queries[:2]
    ds.queries[0].sections, ds.queries[1].sections = ["Social Media Channels"], ["Large Scale SIG"]
    resolve_sections(ds, [("Social Media Channels\u00a0", "social-media-channels"),
                          ("Large Scale SIG", "large-scale-sig"), ("Large Scale SIG", "large-scale-sig-1")])
    assert list(ds.queries[0].relevance) == ["social-media-channels"]
    assert set(ds.queries[1].relevance) == {"large-scale-sig", "large-scale-sig-1"}
    ds.queries[0].sections = ["No Such Heading"]
    with pytest.raises(DatasetError, match="No Such Heading"):
        resolve_sections(ds, [("Large Scale SIG", "large-scale-sig")])


def _gate(name: str, metrics: dict, floors: dict) -> None:
    for group, op in (("hybrid", "ge"), ("ask", "ge"), ("ask_max", "le")):
        for metric, bound in floors.get(group, {}).items():
            m = metrics["hybrid" if group == "hybrid" else "ask"][metric]
            ok = m >= bound if op == "ge" else m <= bound
            assert ok, f"{name} {group} {metric} {m:.3f} {'fell below' if op == 'ge' else 'rose above'} {bound}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["report/test", pytest.param("report-external/all", marks=needs_external),
                                  pytest.param("report-external/keywords", marks=needs_external)])
def test_quality_gate(name, real_index, query_embedder, report_chunks):
    """Hybrid retrieval and /v1/ask must stay inside eval/floors.json on our test split and another author's set."""
    target = InProcessTarget(real_index, embedder=query_embedder)
    dataset, split = name.split("/")
    ds = load_dataset(dataset, split)
    resolve_sections(ds, [(c["section"], c["anchor"]) for c in target.retriever.chunks])
    floors = FLOORS[name]
    metrics = {"hybrid": evaluate_mode(ds, target, "hybrid", progress=False).metrics}
    if name == "report/test":
        assert metrics["hybrid"]["mean_passage_tokens"] <= 150
    if "ask" in floors:
        metrics["ask"] = evaluate_ask(ds, target, progress=False).metrics
    _gate(name, metrics, floors)


@pytest.mark.slow
def test_http_target_gives_identical_numbers(client, real_index, query_embedder):
    ds = load_report_set("dev")
    ds.queries = ds.queries[:15]
    local = evaluate_mode(ds, InProcessTarget(real_index, embedder=query_embedder), "hybrid", progress=False)
    remote = evaluate_mode(ds, HttpTarget("http://testserver", client=client), "hybrid", progress=False)
    strip = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
    assert {k: v for k, v in local.metrics.items() if k not in strip} == \
        {k: v for k, v in remote.metrics.items() if k not in strip}
    ds.queries = ds.queries[:8] + [q for q in ds.queries if not q.answerable][:2]
    local = evaluate_ask(ds, InProcessTarget(real_index, embedder=query_embedder), progress=False)
    remote = evaluate_ask(ds, HttpTarget("http://testserver", client=client), progress=False)
    assert [(r["confidence"], r["abstained"], r["answer"]) for r in local.per_query] == \
        [(r["confidence"], r["abstained"], r["answer"]) for r in remote.per_query]
    assert HttpTarget("http://testserver", client=client).calibration_info()["threshold"] == \
        InProcessTarget(real_index, embedder=query_embedder).calibration_info()["threshold"]


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


@pytest.mark.slow
@needs_external
def test_eval_cli_on_report_external_writes_per_style_and_reliability_tables(tmp_path, real_index, capsys):
    from eval.cli import main

    rc = main(["run", "--dataset", "report-external", "--index", str(real_index), "--modes", "hybrid,ask",
               "--out", str(tmp_path), "--no-progress", "--no-plot"])
    assert rc == 0
    md = next(tmp_path.glob("report-external-all-*.md")).read_text()
    for needle in ("answerable refused", "near-miss refused", "off-topic refused", "/v1/ask: per style",
                   "| chat |", "| near-miss |", "| off-topic |", "hybrid: per style", "reliability of `confidence`",
                   "ECE", "Correct: a response is correct when", "refusal rate by `min_confidence`"):
        assert needle in md, needle
    ask = json.loads(next(tmp_path.glob("report-external-all-*.json")).read_text())["modes"]["ask"]
    styles = ask["tables"]["per_style"]
    assert sum(v["n"] for v in styles.values()) == len(ask["per_query"]) == ask["metrics"]["queries"]
    assert sum(b["n"] for b in ask["tables"]["reliability"]) == len(ask["per_query"])
    assert 0 <= ask["metrics"]["ece"] <= 1
    curve = ask["tables"]["refusal_curve"]
    assert curve["answerable"][0] == 0.0 and curve["near-miss"][0] == 0.0  # nothing is refused at 0
    assert all(a <= b for a, b in zip(curve["answerable"], curve["answerable"][1:], strict=False))


def test_a_run_over_http_does_not_overwrite_the_in_process_report(tmp_path):
    from eval.report import write_reports
    from eval.runner import ModeResult

    r = ModeResult(mode="lexical", metrics={"hit@1": 1.0}, curve={1: 1.0}, latencies_ms=[1.0])
    meta = {"dataset": "report", "split": "test", "queries": 1, "when": "now", "k": 10}
    local = write_reports([r], {**meta, "target": "in-process"}, tmp_path, plot=False)
    http = write_reports([r], {**meta, "target": "http://127.0.0.1:8000"}, tmp_path, plot=False)
    assert local["json"] != http["json"] and http["json"].name.endswith("-http.json")
    assert local["json"].is_file() and http["json"].is_file()


def test_reader_figures_compare_the_reader_with_the_services_confidence():
    """eval.reader.figures: AUROC of the reader's best sentence, of `confidence`, and of both by rank, over
    answerable and near-miss questions (off-topic ones left out); answer-sentence hit rates on answerable ones."""
    import numpy as np

    from eval.reader import QuestionPairs, figures

    def q(answerable, style, conf, labels):
        return QuestionPairs("s/all", "id", style, answerable, conf, "q?", [("h", "s")] * len(labels), labels)

    qs = [q(True, "numeric", 0.9, [0.0, 1.0]), q(True, "chat", 0.2, [1.0, 0.0]),
          q(False, "near-miss", 0.8, [0.0, 0.0]), q(False, "off-topic", 0.0, [0.0])]
    scores = [np.array([0.1, 2.0]), np.array([1.5, -1.0]), np.array([-1.0, -2.0]), np.array([5.0])]
    f = figures(qs, scores)
    assert f["questions"] == 3  # the off-topic question is not counted
    assert f["auroc_reader"] == 1.0 and f["auroc_confidence"] == 0.5
    assert f["reader_sentence_holds_answer"] == 1.0 and f["service_sentence_holds_answer"] == 0.5


@pytest.mark.slow
def test_eval_reader_fits_on_some_sets_and_scores_others(real_index, capsys):
    from eval.cli import main

    rc = main(["reader", "--train", "report:dev", "--score", "report:test", "--epochs", "1", "--limit", "6",
               "--index", str(real_index), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    body = json.loads(out[out.index("{"):])
    assert body["trained_on"] == ["report/dev"]
    f = body["sets"]["report/test"]
    assert f["questions"] > 40 and 0.0 <= f["auroc_reader"] <= 1.0
    assert f["auroc_confidence"] > 0.8  # the calibrated service's own figure on test (0.939 when measured)


def test_answer_in_text_ignoring_abstention_reads_what_a_refused_question_would_have_answered():
    """A refusal's text is the refusal: the metric asks again at min_confidence 0 for the answer it held back."""
    from eval.datasets import Dataset, Query

    class Stub:
        calls: list = []

        def ask(self, question, k=5, min_confidence=None):
            self.calls.append(min_confidence)
            text = "The report does not say." if min_confidence is None else "Kata Containers 3.0 shipped"
            return {"answerable": min_confidence is not None, "confidence": 0.2, "answer": {"text": text}}

    ds = Dataset("stub", "all", [Query("q1", "Which project shipped 3.0?", answers=["Kata Containers"])], "anchor")
    m = evaluate_ask(ds, Stub(), progress=False).metrics
    assert m["answer_in_text"] == 0.0 and m["answer_in_text_ignoring_abstention"] == 1.0
    assert Stub.calls == [None, 0.0]
