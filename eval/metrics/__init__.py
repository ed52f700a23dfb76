"""Retrieval and answering metrics, one per module, named like "ndcg@10" (after ranx).

Every kernel is pure: it takes plain lists and returns a float, or None where the metric is undefined for
that query (no relevant documents); `mean` skips the Nones.
"""

from __future__ import annotations

from eval.metrics.abstention import abstention_scores, refusal_curve
from eval.metrics.auroc import auroc
from eval.metrics.calibration import expected_calibration_error, reliability_table
from eval.metrics.hit import hit_at_k
from eval.metrics.latency import percentile
from eval.metrics.mrr import reciprocal_rank
from eval.metrics.ndcg import ndcg_at_k
from eval.metrics.recall import recall_at_k
from eval.metrics.success import success_at_k

__all__ = ["abstention_scores", "auroc", "expected_calibration_error", "hit_at_k", "mean", "ndcg_at_k",
           "parse_metric", "percentile", "recall_at_k", "reciprocal_rank", "refusal_curve", "reliability_table",
           "success_at_k"]


def parse_metric(name: str) -> tuple[str, int | None]:
    """"ndcg@10" → ("ndcg", 10); "mrr" → ("mrr", None)."""
    base, _, k = name.partition("@")
    return base, int(k) if k else None


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
