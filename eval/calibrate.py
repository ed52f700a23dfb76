"""Fit /v1/ask's answer-sentence weights and abstention model on question sets by more than one author.

    python -m eval calibrate                      # eval/sets.py CALIBRATION_SETS: report dev, report-external,
                                                  # helpers-m and -n (answerable and unanswerable questions)
    python -m eval calibrate --sets report:dev,report-external:all --write /tmp/calibration.json

What is fitted, and how it is chosen (everything on the tuning sets only; test and fresh are never used):
1. the sentence-score weights (cosine, coverage, passage score, answer type): the grid point whose top
   sentence holds an answer string for most of the pooled answerable questions;
2. `confidence`: a sign-constrained logistic model over the registered features (service.ask.features)
   predicting "answer right" (answerable, and the answer sentence holds an answer string); its L2 strength is
   the one with the lowest leave-one-out log loss on the pooled questions;
3. the threshold: from leave-one-out predictions on the pooled questions, the one that refuses the most
   unanswerable questions while refusing at most MAX_FALSE_ABSTENTION of each set's answerable ones (every
   author, not the pool: the pool's share is met by the authors whose questions look easiest to the model
   while the hardest one's run far over it; README, *Calibration on four authors*).
The report gives, per set, the leave-one-out figures and the leave-one-set-out ones (a model and a threshold
fitted on the other sets' questions only: how the fit carries over to an author it never saw).

This module calls the service's public functions only (Answerer.analyze, Answerer.rank_candidates,
evidence.answer_text, features.feature_names/feature_signs, Calibration) and builds its own Answerer: it never
changes a live one.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np

from eval.datasets import Dataset
from eval.metrics import auroc, expected_calibration_error, hit_at_k

log = logging.getLogger(__name__)

MAX_FALSE_ABSTENTION = 0.04  # on each tuning set's questions; the product target is ≤ 5% on unseen questions
L2_GRID = (0.3, 1.0, 3.0, 10.0)
SENTENCE_GRID = [{"cos": 1.0, "coverage": c, "passage": p, "type": t}
                 for c, p, t in itertools.product((0.3, 0.6, 1.0), (0.0, 0.3, 0.6), (0.0, 0.2, 0.4))]


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


def predict(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(w[0] + z @ w[1:])))


def loo_probabilities(x: np.ndarray, y: np.ndarray, signs: list[int], l2: float) -> np.ndarray:
    """Leave-one-out predicted probabilities: an honest view of how the fit does on unseen questions."""
    out = np.zeros(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = predict(fit_monotone(x[keep], y[keep], signs, l2), x[i : i + 1])[0]
    return out


def choose_threshold(p: np.ndarray, answerable: np.ndarray, max_false: float = MAX_FALSE_ABSTENTION,
                     groups: np.ndarray | None = None) -> float:
    """The threshold t (a question is refused when p < t) that refuses the most unanswerable questions subject to
    max over groups g of |{answerable i in g: p_i < t}| / |{answerable i in g}| ≤ `max_false`.

    `groups` labels each row's question set (any hashable labels; default: all rows one group). A group with
    no answerable question bounds nothing (its unanswerable ones still count as refusals); a group with fewer
    than 1 / `max_false` answerable questions allows none refused. Candidates sit midway between neighbouring
    scores, so that small shifts do not flip decisions; of those refusing as many unanswerable questions, the
    lowest wins (the fewest answerable ones refused). 0.0 when there is nothing to choose from."""
    p = np.asarray(p, dtype=float)
    groups = np.zeros(len(p), dtype=int) if groups is None else np.asarray(groups)
    if groups.shape != p.shape or np.shape(answerable) != p.shape:
        raise ValueError(f"p {p.shape}, answerable {np.shape(answerable)} and groups {groups.shape} must have "
                         "one entry per question")
    scores = np.sort(np.unique(p))
    cands = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [1.0]
    best_t, best_recall = 0.0, -1.0
    members = [(groups == g) & answerable for g in np.unique(groups)]
    n_un = max(1, (~answerable).sum())
    for t in cands:
        abst = p < t
        false = max(((abst & m).sum() / max(1, m.sum()) for m in members), default=0.0)
        recall = (abst & ~answerable).sum() / n_un
        if false <= max_false and recall > best_recall + 1e-12:
            best_t, best_recall = t, recall
    return float(best_t)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class Tuning:
    """The pooled tuning questions, one row each."""

    sets: np.ndarray  # index of the question set each row comes from
    styles: list[str]
    x: np.ndarray  # raw features
    answerable: np.ndarray  # bool
    right: np.ndarray  # 1.0 when answerable and the answer sentence holds an answer string


def _figures(p: np.ndarray, t: float, tun: Tuning, rows: np.ndarray) -> dict:
    """Refusals and answers at threshold t over `rows`, with the ECE of the response's p(correct)."""
    ans, right = tun.answerable[rows], tun.right[rows]
    refused = p[rows] < t
    near = np.array([not a and s != "off-topic" for a, s in zip(ans, np.array(tun.styles)[rows], strict=True)])
    off = ~ans & ~near
    correct = np.where(refused, ~ans, right == 1.0)
    p_resp = np.where(refused, 1 - p[rows], p[rows])

    def frac(mask: np.ndarray, of: np.ndarray) -> float | None:
        return float((mask & of).sum() / of.sum()) if of.sum() else None

    return {"questions": int(len(rows)), "answerable": int(ans.sum()),
            "answer_in_text": frac(~refused & (right == 1.0), ans), "answerable_refused": frac(refused, ans),
            "near_miss_refused": frac(refused, near), "off_topic_refused": frac(refused, off),
            "auroc_answerable_vs_near_miss": auroc(p[rows][ans].tolist(), p[rows][near].tolist()),
            "ece": expected_calibration_error(p_resp.tolist(), correct.tolist())}


def collect(datasets: list[Dataset], answerer, progress: bool = True, readers: list | None = None
            ) -> tuple[dict, float, Tuning]:
    """Analyze every question; choose the sentence weights; return them with the features at those weights.
    With `readers` (one per dataset), a dataset's reader feature is that reader's (see calibrate)."""
    from tqdm import tqdm

    from service.ask import Answerer
    from service.ask.evidence import answer_text

    per_set = [Answerer(answerer.r, None, r) for r in readers] if readers else [answerer] * len(datasets)
    questions = [(si, q) for si, ds in enumerate(datasets) for q in ds.queries if q.question]
    analyses = [(q, per_set[si].analyze(q.text, k=5))
                for si, q in tqdm(questions, desc="analyze", disable=not progress, leave=False)]

    def answer_hits(weights: dict) -> float:
        hits = []
        for q, a in analyses:
            if q.answers:
                cands = answerer.rank_candidates(a, weights)
                hits.append(hit_at_k([answer_text(a.hits, cands[0])], q.answers, 1) if cands else 0.0)
        return float(np.mean(hits))

    scored = [(answer_hits(w), -i, w) for i, w in enumerate(SENTENCE_GRID)]
    best_hit, _, weights = max(scored, key=lambda t: (t[0], t[1]))
    xs, right = [], []
    for si, q in tqdm(questions, desc="features", disable=not progress, leave=False):
        a = per_set[si].analyze(q.text, k=5, sentence_weights=weights)
        xs.append(a.x)
        ok = bool(q.answers) and a.best is not None and hit_at_k([answer_text(a.hits, a.best)], q.answers, 1) == 1.0
        right.append(1.0 if ok else 0.0)
    tun = Tuning(sets=np.array([si for si, _ in questions]), styles=[q.style for _, q in questions],
                 x=np.array(xs), answerable=np.array([q.answerable for _, q in questions]), right=np.array(right))
    return weights, best_hit, tun


def leave_one_set_out(z: np.ndarray, y: np.ndarray, answerable: np.ndarray, sets: np.ndarray, held: int,
                      signs: list[int], l2: float, max_false: float = MAX_FALSE_ABSTENTION
                      ) -> tuple[float, np.ndarray]:
    """The threshold chosen, as calibrate chooses it, on the other sets' leave-one-out predictions, and the
    probabilities of set `held`'s rows from a model fitted on the other sets only (0 on the others' rows)."""
    others = sets != held
    p_other = loo_probabilities(z[others], y[others], signs, l2)
    threshold = choose_threshold(p_other, answerable[others], max_false, sets[others])
    p = np.zeros(len(y))
    p[~others] = predict(fit_monotone(z[others], y[others], signs, l2), z[~others])
    return threshold, p


def calibrate(datasets: list[Dataset], answerer, fitted_for: dict, progress: bool = True,
              max_false: float = MAX_FALSE_ABSTENTION, readers: list | None = None) -> dict:
    """Fit on the pooled question sets; returns {"calibration": Calibration, "report": {...}}.

    The threshold refuses at most `max_false` of each set's answerable questions (leave-one-out). `readers`
    (one per dataset; default the answerer's reader for all): the reader whose scores a dataset's questions
    get, one that never saw them (cross-fitting: the served reader may be trained on every tuning set, each
    set is then scored by a reader trained on the others), so that the fit weighs the reader as it does on
    new questions."""
    from service.ask import Calibration
    from service.ask.features import feature_names, feature_signs

    weights, best_hit, tun = collect(datasets, answerer, progress, readers)
    signs = feature_signs()
    mean, scale = tun.x.mean(axis=0), tun.x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (tun.x - mean) / scale
    y = tun.right
    every = np.arange(len(y))

    # L2 strength by leave-one-out log loss on the pooled questions
    loo = {l2: loo_probabilities(z, y, signs, l2) for l2 in L2_GRID}
    losses = {l2: log_loss(p, y) for l2, p in loo.items()}
    l2 = min(L2_GRID, key=lambda v: (losses[v], -v))
    p_loo = loo[l2]
    threshold = choose_threshold(p_loo, tun.answerable, max_false, tun.sets)
    w = fit_monotone(z, y, signs, l2)

    names = [f"{d.name}/{d.split}" for d in datasets]
    report: dict = {"estimated_by": "leave-one-out on the pooled tuning questions (each question predicted by a "
                                    "model fitted without it); leave-one-set-out: fitted on the other sets only, "
                                    "threshold chosen on their own leave-one-out predictions",
                    "sentence_weights_answer_hit": best_hit, "l2": l2,
                    "l2_log_loss": {str(k): round(v, 4) for k, v in losses.items()},
                    "max_false_abstention": max_false, "threshold_rule": "at most max_false_abstention of "
                                                                          "each set's answerable questions refused",
                    "pooled": _figures(p_loo, threshold, tun, every), "per_set": {}}
    for si, name in enumerate(names):
        rows = every[tun.sets == si]
        entry = {"leave_one_out": _figures(p_loo, threshold, tun, rows)}
        if len(names) > 1 and len(set(y[tun.sets != si])) == 2:
            t_other, p_set = leave_one_set_out(z, y, tun.answerable, tun.sets, si, signs, l2, max_false)
            entry["leave_one_set_out"] = {"threshold": t_other, **_figures(p_set, t_other, tun, rows)}
        report["per_set"][name] = entry
    if readers:
        report["reader_per_set"] = {name: r.summary() if r is not None else None
                                    for name, r in zip(names, readers, strict=True)}
    cal = Calibration(features=list(feature_names()), mean=mean.tolist(), scale=scale.tolist(), weights=w.tolist(),
                      threshold=threshold, sentence_weights=weights, fitted_for=fitted_for,
                      fitted_on=[d.describe() for d in datasets],
                      fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), metrics=report)
    return {"calibration": cal, "report": report}


def overlap(datasets: list[Dataset], trained_on: list[dict]) -> list[str]:
    """The question sets among `datasets` that a reader trained on `trained_on` (Dataset.describe() entries)
    has seen: the same dataset with the same split, or either of them being all of it."""
    seen = [(t.get("dataset"), t.get("split")) for t in trained_on]
    return [f"{d.name}/{d.split}" for d in datasets
            if any(d.name == name and (d.split == split or "all" in (d.split, split)) for name, split in seen)]


def readers_for(datasets: list[Dataset], served, folds: list) -> list:
    """The reader that scores each dataset's questions: the served one if it never saw them, else a fold reader
    trained without them. ValueError when a fold reader was trained otherwise than the served one (base
    weights, settings) or when every reader has seen a set."""
    recipe = ("epochs", "lr", "layers", "lora_rank", "neg_per_pos", "seed", "method")
    for f in folds:  # a fold reader stands in for the served one: same base, same recipe, other sets
        mine, theirs = f.meta.get("training") or {}, served.meta.get("training") or {}
        differs = [k for k in recipe if mine.get(k) != theirs.get(k)]
        if f.meta["base_sha256"] != served.meta["base_sha256"] or differs:
            raise ValueError(f"the fold reader at {f.path} was not trained as the served reader ({served.path}) was "
                             f"(differs in: {', '.join(differs) or 'base weights'}); retrain both with: make reader")
    out = []
    for d in datasets:
        unseen = [r for r in [served, *folds] if not overlap([d], r.meta.get("trained_on") or [])]
        if not unseen:
            raise ValueError(f"the reader at {served.path} was trained on {d.name}/{d.split} and no --fold-reader "
                             f"was trained without it: scores of questions a reader has seen would make the fit "
                             f"trust it too much")
        out.append(unseen[0])
    return out


def fusion_fitted(fusion) -> dict:
    """What a calibration records of the hybrid fusion it was fitted with (checked at load: verify_fusion)."""
    return {"method": fusion.method, "alpha": fusion.alpha, "sentence_weight": fusion.sentence_weight,
            "candidates": fusion.candidates}


def index_fingerprint(manifest: dict) -> dict:
    """What a calibration records about the index it was fitted with (and is checked against at load)."""
    return {"model": (manifest.get("model") or {}).get("name"), "chunker": manifest.get("chunker"),
            "index_version": manifest.get("index_version"), "schema_version": manifest.get("schema_version")}


def report_table(report: dict) -> str:
    """Per-set figures as a markdown table."""
    cols = ["answer_in_text", "answerable_refused", "near_miss_refused", "off_topic_refused",
            "auroc_answerable_vs_near_miss", "ece"]

    def fmt(v) -> str:
        return "–" if v is None else f"{v:.3f}"

    out = ["| set | estimate | questions | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    rows = [("pooled", "leave-one-out", report["pooled"])]
    for name, e in report["per_set"].items():
        rows += [(name, k.replace("_", "-"), v) for k, v in e.items()]
    for name, est, f in rows:
        out.append(f"| {name} | {est} | {f['questions']} | " + " | ".join(fmt(f.get(c)) for c in cols) + " |")
    return "\n".join(out)
