"""Fit /v1/ask's answer-sentence weights and abstention models on a tuning split (the report set's dev).

Writes service/calibration.json. Run again whenever chunking or retrieval changes:
    python -m eval calibrate --split dev
"""

from __future__ import annotations

import itertools

import numpy as np

from eval.datasets import Dataset
from eval.metrics import hit_at_k

MAX_FALSE_ABSTENTION = 0.04  # on the tuning split; the product target is ≤ 5% on unseen questions


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


def fit_monotone(x: np.ndarray, y: np.ndarray, signs: list[int], l2: float = 3.0) -> np.ndarray:
    """Logistic regression whose weights keep their expected sign: a feature whose fitted weight points
    the wrong way (a quirk of a small tuning set) is dropped and the rest refitted."""
    active = list(range(x.shape[1]))
    while True:
        w_act = fit_logistic(x[:, active], y, l2=l2)
        wrong = [f for i, f in enumerate(active) if w_act[i + 1] * signs[f] < 0]  # sign 0: either way
        if not wrong:
            break
        worst = min(wrong, key=lambda f: w_act[active.index(f) + 1] * signs[f])
        active.remove(worst)
    w = np.zeros(x.shape[1] + 1)
    w[0] = w_act[0]
    for i, f in enumerate(active):
        w[f + 1] = w_act[i + 1]
    return w


def loo_probabilities(x: np.ndarray, y: np.ndarray, signs: list[int], l2: float) -> np.ndarray:
    """Leave-one-out predicted probabilities: an honest view of how the fit does on unseen questions."""
    out = np.zeros(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = fit_monotone(x[keep], y[keep], signs, l2)
        out[i] = 1 / (1 + np.exp(-(w[0] + x[i] @ w[1:])))
    return out


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

    from service.ask import Calibration
    from service.ask.evidence import answer_text, candidates
    from service.ask.features import feature_signs

    analyses = []
    for q in tqdm(dataset.queries, desc="analyze", disable=not progress, leave=False):
        a = answerer.analyze(q.text, k=5)
        analyses.append((q, a))

    def answer_hits(weights: dict) -> float:
        hits = []
        for q, a in analyses:
            if not q.answers:
                continue
            cands = candidates(a.question, a.hits, a.sentence_sims, answerer.r.sentence_starts, answerer.weights,
                               weights)
            hits.append(hit_at_k([answer_text(a.hits, cands[0])], q.answers, 1) if cands else 0.0)
        return float(np.mean(hits))

    grid = [{"cos": 1.0, "coverage": c, "passage": p, "type": t}
            for c, p, t in itertools.product((0.3, 0.6, 1.0), (0.0, 0.3, 0.6), (0.0, 0.2, 0.4))]
    scored = [(answer_hits(w), -i, w) for i, w in enumerate(grid)]
    best_hit, _, weights = max(scored, key=lambda t: (t[0], t[1]))

    xs, y_ans, y_ok = [], [], []
    for q in dataset.queries:
        a = answerer.analyze(q.text, k=5, sentence_weights=weights)  # again, with the chosen sentence weights
        xs.append(a.x)
        y_ans.append(1.0 if q.answerable else 0.0)
        best = a.best
        y_ok.append(hit_at_k([answer_text(a.hits, best)], q.answers, 1)
                    if q.answers and best is not None else 0.0)
    x = np.array(xs)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (x - mean) / scale
    signs = feature_signs()
    w_ans = fit_monotone(z, np.array(y_ans), signs)
    w_ok = fit_monotone(z, np.array(y_ok), signs)
    cal = Calibration(mean=mean.tolist(), scale=scale.tolist(), answerable_w=w_ans.tolist(),
                      correct_w=w_ok.tolist(), sentence_weights=weights,
                      fitted_on=f"{dataset.name}/{dataset.split} ({len(dataset.queries)} questions)")
    answerable = np.array(y_ans) == 1.0
    p = loo_probabilities(z, np.array(y_ans), signs, 3.0)  # threshold from held-out predictions
    cal.threshold = choose_threshold(p, answerable)
    abst = p < cal.threshold
    metrics = {
        "estimated_by": "leave-one-out on the tuning split",
        "answer_hit_top_sentence": best_hit,
        "abstention_recall": float((abst & ~answerable).sum() / max(1, (~answerable).sum())),
        "false_abstention": float((abst & answerable).sum() / max(1, answerable.sum())),
    }
    return {"calibration": cal, "metrics": metrics}
