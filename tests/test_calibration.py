"""The calibration artefact: found, read and verified; the feature registry it is checked against."""

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.embed import DEFAULT_MODEL_NAME
from service.ask.calibration import (
    PACKAGED,
    Calibration,
    CalibrationError,
    find_calibration,
    load_calibration,
)
from service.ask.features import REGISTRY, feature, feature_names, feature_signs
from tests.conftest import needs_external

MANIFEST = {"index_version": "v1", "model": {"name": DEFAULT_MODEL_NAME},
            "chunker": {"target_tokens": 170, "strategy": "section"}}


def make(**kw) -> Calibration:
    n = len(feature_names())
    base = dict(features=list(feature_names()), mean=[0.0] * n, scale=[1.0] * n, weights=[0.0] + [0.5] * n,
                threshold=0.4, fitted_for={"model": DEFAULT_MODEL_NAME, "chunker": MANIFEST["chunker"],
                                           "index_version": "v0"})
    base.update(kw)
    return Calibration(**base)


def test_save_load_round_trip_and_verify(tmp_path):
    cal = make()
    cal.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert back.path == str(tmp_path / "c.json") and back.threshold == 0.4 and back.features == cal.features
    back.verify(MANIFEST)  # another index version of the same model and chunker is fine
    assert "path" not in json.loads((tmp_path / "c.json").read_text())


@pytest.mark.parametrize("change,message", [
    ({"features": list(feature_names())[:-1]}, "other features"),
    ({"fitted_for": {"model": "other/model", "chunker": MANIFEST["chunker"]}}, "fitted for the model"),
    ({"fitted_for": {"model": DEFAULT_MODEL_NAME, "chunker": {"target_tokens": 300, "strategy": "section"}}},
     "target_tokens"),
])
def test_a_calibration_for_another_model_chunker_or_feature_list_is_refused(change, message):
    cal = make(**change)
    if len(cal.features) != len(cal.mean):
        cal.mean, cal.scale, cal.weights = cal.mean[:-1], cal.scale[:-1], cal.weights[:-1]
    with pytest.raises(CalibrationError, match=message) as e:
        cal.verify(MANIFEST)
    assert "python -m eval calibrate" in str(e.value)


@pytest.mark.parametrize("content,message", [
    (None, "no calibration"), ("{not json", "cannot read"), ('{"format": 1, "features": []}', "format 2"),
    ('{"format": 2, "features": ["a"], "mean": [], "scale": [], "weights": [0], "threshold": 0.5}', "malformed"),
])
def test_missing_or_broken_files_are_clear_errors(tmp_path, content, message):
    p = tmp_path / "c.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(CalibrationError, match=message):
        Calibration.load(p)


def test_where_the_calibration_is_found(tmp_path):
    explicit, index = tmp_path / "mine.json", tmp_path / "index"
    index.mkdir()
    assert find_calibration([index]) == PACKAGED  # nothing beside the index: the one shipped with the code
    make().save(index / "calibration.json")
    assert find_calibration([tmp_path / "other", index]) == index / "calibration.json"
    with pytest.raises(CalibrationError, match="does not exist"):
        find_calibration([index], explicit)  # an explicit path that is not there is an error, not a fallback
    make(threshold=0.9).save(explicit)
    assert load_calibration(MANIFEST, [index], explicit).threshold == 0.9


def test_the_packaged_calibration_fits_the_code_and_says_what_it_was_fitted_on():
    cal = Calibration.load(PACKAGED)
    assert cal.features == list(feature_names())
    assert cal.fitted_for["model"] == DEFAULT_MODEL_NAME and cal.fitted_for["chunker"]
    sets = {(s["dataset"], s["split"]) for s in cal.fitted_on}
    # four authors (eval/cli.py CALIBRATION_SETS); never test or fresh, nor a helper set the reader trained on
    assert sets == {("report", "dev"), ("report-external", "all"), ("helpers-m", "all"), ("helpers-n", "all")}
    assert all(len(f["sha256"]) == 64 for s in cal.fitted_on for f in s["files"])
    assert 0.0 < cal.threshold < 1.0 and cal.fitted_at


def test_confidence_follows_the_signs():
    cal = make()
    x = np.zeros(len(feature_names()))
    for i, sign in enumerate(feature_signs()):
        if sign:
            up = x.copy()
            up[i] = 1.0
            cal.weights = [0.0] + [0.0] * len(x)
            cal.weights[i + 1] = 0.7 * sign
            assert (cal.confidence(up) > cal.confidence(x)) == (sign > 0)


def test_the_threshold_keeps_every_sets_false_refusals_within_the_limit():
    """choose_threshold with groups: at most max_false of each set's answerable questions refused, not of the pool
    (where an author whose questions score high would pay for one whose questions score low), nor on average."""
    from eval.calibrate import choose_threshold

    # set 0: answerable at 0.9 and 0.3 (ten each), near-miss at 0.2; set 1: forty answerable at 0.8, near-miss 0.5.
    # Candidates (midpoints): 0, 0.25, 0.4, 0.65, 0.85, 1.
    p = np.array([0.9] * 10 + [0.3] * 10 + [0.2] * 5 + [0.8] * 40 + [0.5] * 5)
    answerable = np.array([True] * 20 + [False] * 5 + [True] * 40 + [False] * 5)
    groups = np.array([0] * 25 + [1] * 45)
    # pooled: 0.65 refuses every near-miss question and 10 of the 60 answerable ones (0.17 ≤ 0.3)
    assert choose_threshold(p, answerable, 0.3) == pytest.approx(0.65)
    assert choose_threshold(p, answerable, 0.3, np.zeros(len(p), dtype=int)) == pytest.approx(0.65)
    # each set: 0.65 refuses half of set 0's answerable questions (their mean with set 1's, 0.25, would pass)
    assert choose_threshold(p, answerable, 0.3, groups) == pytest.approx(0.25)
    assert choose_threshold(p, answerable, 0.3, np.where(groups == 0, "dev", "external")) == pytest.approx(0.25)


def test_the_threshold_rule_at_its_edges():
    from eval.calibrate import choose_threshold

    # a set without answerable questions bounds nothing; its questions still count as refused
    p = np.array([0.8] * 40 + [0.5] * 5 + [0.7] * 3)
    answerable = np.array([True] * 40 + [False] * 8)
    assert choose_threshold(p, answerable, 0.3, np.array([0] * 45 + [1] * 3)) == pytest.approx(0.75)
    # of thresholds refusing as many unanswerable questions, the lowest (fewest answerable refused)
    p = np.array([0.9] * 29 + [0.5] + [0.1] * 2)
    answerable = np.array([True] * 30 + [False] * 2)
    assert choose_threshold(p, answerable, 0.05) == pytest.approx(0.3)
    assert choose_threshold(np.array([]), np.array([], dtype=bool)) == 0.0
    with pytest.raises(ValueError, match="one entry per question"):
        choose_threshold(p, answerable, 0.05, np.zeros(3))


def test_leave_one_set_out_chooses_the_threshold_on_each_of_the_other_sets():
    """The held set is predicted by a fit on the others, with the threshold the per-set rule gives on their
    leave-one-out predictions: here the pooled rule would refuse 30 % of set 1's answerable questions."""
    from eval.calibrate import choose_threshold, leave_one_set_out, loo_probabilities

    rng = np.random.default_rng(0)
    x, answerable, sets = [], [], []
    # (answerable, their mean score, near-miss, theirs) for sets 0, 1 and the held-out 2
    for g, (n_ans, mu_ans, n_un, mu_un) in enumerate([(40, 2.0, 15, -1.0), (20, 0.3, 10, -1.0), (20, 1.0, 10, -1.0)]):
        x += [*rng.normal(mu_ans, 0.5, n_ans), *rng.normal(mu_un, 0.5, n_un)]
        answerable += [True] * n_ans + [False] * n_un
        sets += [g] * (n_ans + n_un)
    z, answerable, sets = np.array(x)[:, None], np.array(answerable), np.array(sets)
    y = answerable.astype(float)
    t, p = leave_one_set_out(z, y, answerable, sets, 2, [1], 1.0, max_false=0.1)
    others = sets != 2
    assert (p[~others] > 0).all() and (p[others] == 0).all()
    p_loo = loo_probabilities(z[others], y[others], [1], 1.0)
    for g in (0, 1):
        mine = (sets[others] == g) & answerable[others]
        assert ((p_loo < t) & mine).sum() / mine.sum() <= 0.1
    pooled = choose_threshold(p_loo, answerable[others], 0.1)
    ones = (sets[others] == 1) & answerable[others]
    assert ((p_loo < pooled) & ones).sum() / ones.sum() > 0.1 and t < pooled


def test_the_packaged_calibration_keeps_each_sets_false_refusals_within_its_rule():
    cal = Calibration.load(PACKAGED)
    limit = cal.metrics["max_false_abstention"]
    assert len(cal.metrics["per_set"]) == len(cal.fitted_on) >= 2
    for name, entry in cal.metrics["per_set"].items():
        assert entry["leave_one_out"]["answerable_refused"] <= limit, name


def test_feature_registry():
    names = feature_names()
    assert len(names) == len(set(names)) == len(REGISTRY)
    assert all(f.sign in (-1, 0, 1) and f.doc for f in REGISTRY)
    with pytest.raises(ValueError, match="registered twice"):
        feature(sign=1)(REGISTRY[0].fn)
    with pytest.raises(ValueError, match="sign"):
        feature(sign=2)
    assert Path(PACKAGED).name == "calibration.json"


@pytest.mark.slow
@needs_external
def test_calibrate_fits_on_two_authors_and_writes_an_artefact_the_service_accepts(tmp_path, real_index, real_embedder):
    """A small fit (30 questions of each set) end to end: public functions only, its own answerer."""
    from eval.calibrate import calibrate, index_fingerprint
    from eval.datasets import load_dataset
    from eval.targets import InProcessTarget
    from service.ask import Answerer
    from service.ask.reader import load_reader

    target = InProcessTarget(real_index, embedder=real_embedder)
    sets = [load_dataset("report", "dev"), load_dataset("report-external", "all")]
    for d in sets:  # both answerable and unanswerable questions of each
        d.queries = [q for q in d.queries if q.answerable][:22] + [q for q in d.queries if not q.answerable][:8]
    manifest = target.retriever.index.manifest
    reader = load_reader()
    out = calibrate(sets, Answerer(target.retriever, None, reader),
                    {**index_fingerprint(manifest), "reader": reader.fingerprint}, progress=False)
    cal, report = out["calibration"], out["report"]
    cal.save(tmp_path / "calibration.json")
    back = load_calibration(manifest, [tmp_path])
    back.verify_reader(reader.fingerprint)
    with pytest.raises(CalibrationError, match="reader"):
        back.verify_reader({**reader.fingerprint, "adapter_sha256": "another"})
    with pytest.raises(CalibrationError, match="reader"):
        back.verify_reader(None)
    assert back.threshold == cal.threshold and back.features == list(feature_names())
    assert [s["questions"] for s in back.fitted_on] == [30, 30]
    assert back.fitted_on[0]["files"][0]["path"].endswith("dev.jsonl")
    assert set(report["per_set"]) == {"report/dev", "report-external/all"}
    for entry in report["per_set"].values():
        assert set(entry) == {"leave_one_out", "leave_one_set_out"}
    for entry in report["per_set"].values():  # the threshold's constraint, on each set's held-out predictions
        assert entry["leave_one_out"]["answerable_refused"] <= 0.04
    w = np.array(back.weights[1:])
    assert all(wi * s >= 0 for wi, s in zip(w, feature_signs(), strict=True))  # every weight on its sign's side
