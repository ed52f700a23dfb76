"""Fit /v1/ask's answer-sentence weights and abstention models on a tuning split (the report set's dev).

Writes service/calibration.json. Run again whenever chunking or retrieval changes:
    python -m eval calibrate --split dev
"""

from __future__ import annotations

import itertools

import numpy as np

from eval.datasets import Dataset
from eval.metrics import hit_at_k

MAX_FALSE_ABSTENTION = 0.02  # on the tuning split; the product target is ≤ 5% on unseen questions


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularized logistic regression by Newton's method; returns [bias, weights…] on standardized x."""
    n, d = x.shape
    xb = np.hstack([np.ones((n, 1)), x])
    w = np.zeros(d + 1)
    reg = np.eye(d + 1) * l2
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) + reg @ w
        hess = xb.T @ (xb * (p * (1 - p))[:, None]) + reg + np.eye(d + 1) * 1e-9
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def choose_threshold(p: np.ndarray, answerable: np.ndarray, max_false: float = MAX_FALSE_ABSTENTION) -> float:
    """Highest abstention recall with at most `max_false` of answerable questions abstained on; the
    threshold sits midway between neighbouring scores so that small shifts do not flip decisions."""
    scores = np.sort(np.unique(p))
    cands = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [1.0]
    best_t, best_recall = 0.0, -1.0
    n_ans = max(1, answerable.sum())
    n_un = max(1, (~answerable).sum())
    for t in cands:
        abst = p < t
        false = (abst & answerable).sum() / n_ans
        recall = (abst & ~answerable).sum() / n_un
        if false <= max_false and recall > best_recall + 1e-12:
            best_t, best_recall = t, recall
    return float(best_t)


def calibrate(dataset: Dataset, answerer, progress: bool = True) -> dict:
    from tqdm import tqdm

    from service.answer import Calibration

    analyses = []
    for q in tqdm(dataset.queries, desc="analyze", disable=not progress, leave=False):
        a = answerer.analyze(q.text, k=5)
        analyses.append((q, a))

    def answer_hits(weights: dict) -> float:
        answerer.cal.sentence_weights = weights
        hits = []
        for q, a in analyses:
            if not q.answers:
                continue
            cands = answerer.candidates(q.text, a["qvec"], a["hits"])
            if not cands:
                hits.append(0.0)
                continue
            s, e = answerer.answer_span(a["hits"], cands[0])
            hits.append(hit_at_k([a["hits"][cands[0].passage].chunk["text"][s:e]], q.answers, 1))
        return float(np.mean(hits))

    grid = [{"cos": 1.0, "coverage": c, "passage": p, "type": t}
            for c, p, t in itertools.product((0.3, 0.6, 1.0), (0.0, 0.3, 0.6), (0.0, 0.2, 0.4))]
    scored = [(answer_hits(w), -i, w) for i, w in enumerate(grid)]
    best_hit, _, weights = max(scored, key=lambda t: (t[0], t[1]))
    answerer.cal.sentence_weights = weights

    xs, y_ans, y_ok = [], [], []
    for q, a in analyses:
        cands = answerer.candidates(q.text, a["qvec"], a["hits"])
        best = cands[0] if cands else None
        lex_top = float(answerer.r.lexical_scores(q.text).max())
        xs.append(answerer.features(q.text, a["qvec"], a["hits"], best, lex_top))
        y_ans.append(1.0 if q.answerable else 0.0)
        ok = 0.0
        if q.answers and best is not None:
            s, e = answerer.answer_span(a["hits"], best)
            ok = hit_at_k([a["hits"][best.passage].chunk["text"][s:e]], q.answers, 1)
        y_ok.append(ok)
    x = np.array(xs)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (x - mean) / scale
    w_ans = fit_logistic(z, np.array(y_ans))
    w_ok = fit_logistic(z, np.array(y_ok))
    cal = Calibration(mean=mean.tolist(), scale=scale.tolist(), answerable_w=w_ans.tolist(),
                      correct_w=w_ok.tolist(), sentence_weights=weights,
                      fitted_on=f"{dataset.name}/{dataset.split} ({len(dataset.queries)} questions)")
    p = np.array([cal.p_answerable(row) for row in x])
    answerable = np.array(y_ans) == 1.0
    cal.threshold = choose_threshold(p, answerable)
    abst = p < cal.threshold
    metrics = {
        "answer_hit_top_sentence": best_hit,
        "abstention_recall": float((abst & ~answerable).sum() / max(1, (~answerable).sum())),
        "false_abstention": float((abst & answerable).sum() / max(1, answerable.sum())),
    }
    return {"calibration": cal, "metrics": metrics}
