"""Metric kernels against small cases worked out by hand."""

import math

import pytest

from eval.metrics import (
    abstention_scores,
    hit_at_k,
    mean,
    ndcg_at_k,
    parse_metric,
    percentile,
    recall_at_k,
    reciprocal_rank,
)


def test_hit_at_k_folds_case_and_space():
    passages = ["nothing here", "The  event attracted 630\nregistrations", "x"]
    assert hit_at_k(passages, ["630 registrations"], 1) == 0.0
    assert hit_at_k(passages, ["630 registrations"], 2) == 1.0
    assert hit_at_k(passages, ["630 REGISTRATIONS"], 10) == 1.0  # k larger than the results
    assert hit_at_k(passages, [], 5) is None  # no answer strings: undefined
    assert hit_at_k([], ["x"], 5) == 0.0


def test_recall_at_k():
    ranked = ["a", "b", "a", "c", "d"]  # duplicate ids count once, at their first rank
    assert recall_at_k(ranked, {"a", "c"}, 1) == 0.5
    assert recall_at_k(ranked, {"a", "c"}, 3) == 1.0  # deduped: a, b, c
    assert recall_at_k(ranked, {"z"}, 10) == 0.0
    assert recall_at_k(ranked, set(), 10) is None  # nothing relevant: undefined, skipped by mean
    assert recall_at_k(ranked, {"a": 1, "z": 0}, 1) == 1.0  # grade 0 is not relevant


def test_mrr():
    assert reciprocal_rank([False, False, True], 10) == pytest.approx(1 / 3)
    assert reciprocal_rank([False, False, True], 2) == 0.0
    assert reciprocal_rank([], 10) == 0.0


def test_ndcg_by_hand():
    # ranked b(1) a(2) c(0); relevance a=2, b=1
    # DCG = 1/log2(2) + 2/log2(3) = 1 + 1.26186 = 2.26186
    # IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093
    got = ndcg_at_k(["b", "a", "c"], {"a": 2, "b": 1}, 10)
    assert got == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert got == pytest.approx(0.85972, abs=1e-5)
    assert ndcg_at_k(["x", "y"], {"a": 1}, 10) == 0.0
    assert ndcg_at_k(["a"], {}, 10) is None
    # k smaller than the relevant set: IDCG also cut at k
    assert ndcg_at_k(["a"], {"a": 1, "b": 1}, 1) == 1.0
    # k larger than the results
    assert ndcg_at_k(["a"], {"a": 1, "b": 1}, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_percentile_and_mean():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert mean([1.0, None, 3.0]) == 2.0
    assert mean([None]) is None
    assert parse_metric("ndcg@10") == ("ndcg", 10) and parse_metric("mrr") == ("mrr", None)


def test_abstention_scores():
    # answerable: T T T F F ; abstained: F T F T F → tp=1 (4th), abstained=2, unanswerable=2
    s = abstention_scores([True, True, True, False, False], [False, True, False, True, False])
    assert s == {"abstention_precision": 0.5, "abstention_recall": 0.5, "false_abstention": pytest.approx(1 / 3)}
    none = abstention_scores([True], [False])
    assert none["abstention_precision"] is None and none["abstention_recall"] is None
