"""Run a question set against a target and compute every metric per mode."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from eval.datasets import Dataset
from eval.metrics import (
    abstention_scores,
    auroc,
    expected_calibration_error,
    hit_at_k,
    mean,
    ndcg_at_k,
    percentile,
    recall_at_k,
    reciprocal_rank,
    refusal_curve,
    reliability_table,
    success_at_k,
)

log = logging.getLogger(__name__)

HIT_KS = (1, 3, 5, 10)
RECALL_KS = (1, 3, 5, 10, 20)
SECTION_KS = (1, 5)
CURVE_THRESHOLDS = [round(t / 20, 2) for t in range(0, 21)]
CORRECT_DEFINITION = ("a response is correct when the question is answerable, it was answered and an answer "
                      "string is in answer.text, or when the question is unanswerable and it was refused; "
                      "its probability of being correct is `confidence` when answered and 1 − `confidence` when "
                      "refused")


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float | None]
    curve: dict[int, float | None]  # recall@k (or hit@k for answer strings) for k = 1..depth
    latencies_ms: list[float]
    per_query: list[dict] = field(default_factory=list)
    tables: dict = field(default_factory=dict)  # per-style table, reliability table, refusal curve …


def _keys(results: list[dict], key: str) -> list[str]:
    return [r["citation"][key] for r in results]


def evaluate_mode(dataset: Dataset, target, mode: str, depth: int = 10, progress: bool = True,
                  fresh_cache: bool = True) -> ModeResult:
    """Search every query of the dataset in `mode`, take the first `depth` results, score them.

    With `fresh_cache` the target forgets cached query vectors first, so latency includes encoding.
    """
    rows = []
    lat = []
    fetch = max(depth, 50) if dataset.key == "doc_id" else depth  # passages → documents needs more passages
    if fresh_cache and hasattr(target, "reset_cache"):
        target.reset_cache()
    for q in tqdm(dataset.queries, desc=f"{dataset.name}/{dataset.split} {mode}", disable=not progress,
                  leave=False):
        t0 = time.perf_counter()
        results = target.search(q.text, fetch, mode)
        lat.append((time.perf_counter() - t0) * 1000)
        texts = [r["text"] for r in results]
        keys = _keys(results, dataset.key)
        row: dict = {"id": q.id, "query": q.text, "kind": q.kind, "style": q.style, "answerable": q.answerable,
                     "top": [f"{r['citation']['section']} (l.{r['citation']['line_start']})" for r in results[:3]],
                     "top_keys": keys[:10]}
        if q.answers:
            for k in HIT_KS:
                row[f"hit@{k}"] = hit_at_k(texts[:depth], q.answers, k)
            flags = [hit_at_k([t], q.answers, 1) == 1.0 for t in texts[:depth]]
            row["first_hit"] = next((i + 1 for i, f in enumerate(flags) if f), None)
            row["mrr@10"] = reciprocal_rank(flags, 10)
        elif q.relevance:
            dedup = list(dict.fromkeys(keys))
            row["mrr@10"] = reciprocal_rank([d in q.relevance for d in dedup], 10)
        if q.relevance:
            for k in RECALL_KS:
                row[f"recall@{k}"] = recall_at_k(keys, q.relevance, k)
            row["ndcg@10"] = ndcg_at_k(keys, q.relevance, 10)
            for k in SECTION_KS:
                row[f"section_hit@{k}"] = success_at_k(list(dict.fromkeys(keys)), q.relevance, k)
        row["tokens@5"] = mean([float(r["tokens"]) for r in results[:5]]) if results else None
        rows.append(row)

    answerable = [r for r in rows if r.get("hit@1") is not None]
    metrics: dict[str, float | None] = {"queries": float(len(rows))}
    for k in HIT_KS:
        metrics[f"hit@{k}"] = mean([r.get(f"hit@{k}") for r in answerable]) if answerable else None
    metrics["mrr@10"] = mean([r.get("mrr@10") for r in rows])
    for k in RECALL_KS:
        metrics[f"recall@{k}"] = mean([r.get(f"recall@{k}") for r in rows])
    metrics["ndcg@10"] = mean([r.get("ndcg@10") for r in rows])
    for k in SECTION_KS:
        metrics[f"section_hit@{k}"] = mean([r.get(f"section_hit@{k}") for r in rows])
    metrics["mean_passage_tokens"] = mean([r["tokens@5"] for r in rows])
    for p in (50, 95, 99):
        metrics[f"latency_p{p}_ms"] = percentile(lat, p)
    curve: dict[int, float | None] = {}
    for k in range(1, depth + 1):
        if answerable:
            curve[k] = mean([1.0 if r["first_hit"] is not None and r["first_hit"] <= k else 0.0 for r in answerable])
        else:
            curve[k] = mean([recall_at_k(list(r["top_keys"]), q.relevance, k)
                             for r, q in zip(rows, dataset.queries, strict=True)])
    styles = {}
    for style in _styles(rows):
        sub = [r for r in rows if r["style"] == style]
        styles[style] = {"n": len(sub), **{m: mean([r.get(m) for r in sub]) for m in
                                          ("hit@1", "hit@5", "section_hit@1", "section_hit@5")}}
    return ModeResult(mode=mode, metrics=metrics, curve=curve, latencies_ms=lat, per_query=rows,
                      tables={"per_style": styles} if len(styles) > 1 else {})


def _styles(rows: list[dict]) -> list[str]:
    return sorted({r["style"] for r in rows if r.get("style")}, key=lambda s: (s in ("near-miss", "off-topic"), s))


def evaluate_ask(dataset: Dataset, target, k: int = 5, progress: bool = True) -> ModeResult:
    """The chat-bot endpoint: answer string in answer.text, refusals by kind of question, calibration of
    `confidence` (reliability table, ECE) and the refusal curve over thresholds. Keyword queries are skipped."""
    rows = []
    lat = []
    if hasattr(target, "reset_cache"):
        target.reset_cache()
    questions = [q for q in dataset.queries if q.question]
    for q in tqdm(questions, desc=f"{dataset.name}/{dataset.split} ask", disable=not progress, leave=False):
        t0 = time.perf_counter()
        resp = target.ask(q.text, k=k)
        lat.append((time.perf_counter() - t0) * 1000)
        abstained = not resp["answerable"]
        row = {"id": q.id, "query": q.text, "kind": q.kind, "style": q.style, "answerable": q.answerable,
               "abstained": abstained, "confidence": resp["confidence"], "answer": resp["answer"]["text"]}
        if q.answers:
            row["answer_hit"] = hit_at_k([resp["answer"]["text"]], q.answers, 1) if not abstained else 0.0
            # what it would have answered: a refusal's text is the refusal, so ask again at min_confidence 0
            text = (target.ask(q.text, k=k, min_confidence=0.0) if abstained else resp)["answer"]["text"]
            row["answer_hit_ignoring_abstention"] = hit_at_k([text], q.answers, 1)
        row["correct"] = bool(row["answer_hit"]) if q.answerable else abstained
        row["p_correct"] = resp["confidence"] if not abstained else 1.0 - resp["confidence"]
        rows.append(row)
    metrics: dict[str, float | None] = {"queries": float(len(rows))}
    metrics["answer_in_text"] = mean([r.get("answer_hit") for r in rows])
    metrics["answer_in_text_ignoring_abstention"] = mean([r.get("answer_hit_ignoring_abstention") for r in rows])
    metrics.update(abstention_scores([r["answerable"] for r in rows], [r["abstained"] for r in rows]))
    metrics["answerable_refused"] = metrics["false_abstention"]
    groups = {"answerable": [r for r in rows if r["answerable"]],
              "near-miss": [r for r in rows if not r["answerable"] and r["style"] != "off-topic"],
              "off-topic": [r for r in rows if not r["answerable"] and r["style"] == "off-topic"]}
    for name, sub in groups.items():
        if name != "answerable":
            metrics[f"{name.replace('-', '_')}_refused"] = mean([1.0 if r["abstained"] else 0.0 for r in sub])
        metrics[f"n_{name.replace('-', '_')}"] = float(len(sub))
    probs, correct = [r["p_correct"] for r in rows], [r["correct"] for r in rows]
    metrics["ece"] = expected_calibration_error(probs, correct)
    metrics["auroc_answerable_vs_near_miss"] = auroc([r["confidence"] for r in groups["answerable"]],
                                                     [r["confidence"] for r in groups["near-miss"]])
    for p in (50, 95, 99):
        metrics[f"latency_p{p}_ms"] = percentile(lat, p)
    styles = {}
    for style in _styles(rows):
        sub = [r for r in rows if r["style"] == style]
        styles[style] = {"n": len(sub), "answered": sum(not r["abstained"] for r in sub),
                         "answer_in_text": sum(r.get("answer_hit") or 0.0 for r in sub)
                         if any(r["answerable"] for r in sub) else None,
                         "refused": sum(r["abstained"] for r in sub)}
    curve = {name: refusal_curve([r["confidence"] for r in sub], CURVE_THRESHOLDS) for name, sub in groups.items()}
    tables = {"per_style": styles, "reliability": reliability_table(probs, correct),
              "correct_means": CORRECT_DEFINITION,
              "refusal_curve": {"thresholds": CURVE_THRESHOLDS, **curve}}
    return ModeResult(mode="ask", metrics=metrics, curve={}, latencies_ms=lat, per_query=rows, tables=tables)
