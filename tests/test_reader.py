"""The reader: the shipped adapters, their round trip through the artefact, and the checks at load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eval.reader import build_model, low_rank_delta, save_reader
from service.ask.reader import (
    META,
    PACKAGED_DIR,
    RUNTIME,
    WEIGHTS,
    ReaderError,
    as_tensors,
    encode_pairs,
    load_reader,
    pair_text,
    pair_tokenizer,
)
from tests.conftest import damaged_copy

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir():
    from indexer.embed import bundled_model_dir

    return bundled_model_dir()


@pytest.mark.parametrize("layers", [None, 2])
def test_saved_adapters_score_as_the_trained_model(tmp_path, model_dir, layers):
    """Adapters written by save_reader and merged by load_reader give the trained model's logits (to the fp16
    rounding of the adapters); a reader of the first layers only is loaded with as many."""
    torch.manual_seed(0)
    model = build_model(model_dir, lora_rank=4, layers=layers)
    assert len(model.bert.encoder.layer) == (layers or 6)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)  # B starts at zero: give the update a value to carry
    model.eval()
    save_reader(tmp_path, model, 4, model_dir, {"trained_on": [{"dataset": "x", "split": "all"}]})
    loaded = load_reader(tmp_path, model_dir, runtime="torch")
    pairs = [("how many people attended?", pair_text(["Events", "Summit"], "The summit drew 1,200 attendees.")),
             ("who chairs the board?", pair_text([], "A sentence without a heading."))]
    with torch.no_grad():
        want = model(**as_tensors(encode_pairs(pair_tokenizer(model_dir), [q for q, _ in pairs],
                                             [p for _, p in pairs]))).numpy()
    got = np.array([loaded.score(q, [p])[0] for q, p in pairs])
    assert np.allclose(got, want, atol=2e-3), (got, want)
    meta = json.loads((tmp_path / META).read_text())
    assert loaded.fingerprint["adapter_sha256"] == meta["adapter_sha256"]
    assert meta["layers"] == len(loaded.model.bert.encoder.layer) == (layers or 6)


def test_a_full_fine_tune_is_stored_as_its_low_rank_change(tmp_path, model_dir):
    """A fully fine-tuned reader saved with compress_rank: its change to each adapted weight, truncated by SVD,
    is what load_reader merges. A change of rank ≤ compress_rank comes back whole (to fp16 rounding); the
    stored rank and scale say how to read it."""
    torch.manual_seed(0)
    model = build_model(model_dir)  # every weight trainable, no adapters
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for lin in (layer.attention.self.query, layer.intermediate.dense, layer.output.dense):
                out_f, in_f = lin.weight.shape
                lin.weight += torch.randn(out_f, 2) @ torch.randn(2, in_f) * 0.02  # a rank-2 change
        model.head.weight.normal_(0, 0.1)
    model.eval()
    save_reader(tmp_path, model, None, model_dir, {"trained_on": [{"dataset": "x", "split": "all"}]},
                compress_rank=4)
    meta = json.loads((tmp_path / META).read_text())
    assert (meta["lora_rank"], meta["lora_alpha"]) == (4, 4.0)
    loaded = load_reader(tmp_path, model_dir, runtime="torch")
    questions = ["how many people attended?", "who chairs the board?"]
    passages = [pair_text(["Events"], "The summit drew 1,200 attendees."), pair_text([], "No heading here.")]
    with torch.no_grad():
        want = model(**as_tensors(encode_pairs(pair_tokenizer(model_dir), questions, passages))).numpy()
    got = np.array([loaded.score(q, [p])[0] for q, p in zip(questions, passages, strict=True)])
    assert np.allclose(got, want, atol=5e-3), (got, want)
    # the change the trainer already computed to score it is what is written (no second SVD, same bytes)
    save_reader(tmp_path / "given", model, None, model_dir, {"trained_on": []}, compress_rank=4,
                delta=low_rank_delta(model, model_dir, 4))
    assert (tmp_path / "given" / WEIGHTS).read_bytes() == (tmp_path / WEIGHTS).read_bytes()
    save_reader(tmp_path / "r1", model, None, model_dir, {"trained_on": []}, compress_rank=1)  # loses a part
    cut = load_reader(tmp_path / "r1", model_dir, runtime="torch")
    assert not np.allclose([cut.score(q, [p])[0] for q, p in zip(questions, passages, strict=True)], want, atol=5e-3)


def test_the_onnx_export_scores_close_to_torch(tmp_path, model_dir):
    """The service runs the reader on ONNX Runtime (int8), exported once into the cache: its logits stay close
    to torch's fp32 ones and order the passages alike, and a second load reuses the export."""
    on_torch = load_reader(None, model_dir, runtime="torch")
    on_onnx = load_reader(None, model_dir, cache=tmp_path)
    assert on_onnx.runtime == RUNTIME and on_torch.runtime == "torch"
    assert on_onnx.fingerprint != on_torch.fingerprint  # a calibration fitted on one refuses the other
    passages = [pair_text(["OpenInfra Days"], "OpenInfra Days in 2023 attracted a total of 1,862 in-person "
                                              "participants and thousands of online attendees."),
                pair_text(["OpenInfra Days"], "OpenInfra Days Korea also included parallel open source "
                                              "communities including the Cloud Native, OCP and Ceph communities."),
                pair_text([], "A short one."), pair_text(["A", "B"], "word " * 300)]  # the last one is truncated
    question = "how many people attended OpenInfra Days in person?"
    fp32, int8 = on_torch.score(question, passages), on_onnx.score(question, passages)
    assert np.abs(fp32 - int8).max() < 1.5, (fp32, int8)
    assert int(np.argmax(fp32[:3])) == int(np.argmax(int8[:3])) == 0  # the sentence that answers
    export = next(tmp_path.glob("reader-*"))
    assert sorted(p.name for p in export.iterdir()) == ["meta.json", "model-int8.onnx"]  # the graph it serves
    stamp = (export / "meta.json").stat().st_mtime_ns
    assert load_reader(None, model_dir, cache=tmp_path).runtime == RUNTIME
    assert [p.name for p in tmp_path.iterdir()] == [export.name]  # the private work directory is gone
    assert (export / "meta.json").stat().st_mtime_ns == stamp  # not exported again


def test_a_reader_that_does_not_check_out_is_refused(tmp_path, model_dir):
    with pytest.raises(ReaderError, match="no reader"):
        load_reader(tmp_path / "nowhere", model_dir)
    copy = damaged_copy(PACKAGED_DIR, tmp_path / "copy", WEIGHTS)
    with pytest.raises(ReaderError, match="checksum"):
        load_reader(copy, model_dir)
    shutil.copy(PACKAGED_DIR / WEIGHTS, copy / WEIGHTS)
    meta = json.loads((copy / META).read_text())
    (copy / META).write_text(json.dumps({**meta, "base_sha256": "0" * 64}))
    with pytest.raises(ReaderError, match="other base weights"):
        load_reader(copy, model_dir)
    for layers in (0, "3", True):
        (copy / META).write_text(json.dumps({**meta, "layers": layers}))
        with pytest.raises(ReaderError, match="positive whole number"):
            load_reader(copy, model_dir)
    other = 6 if meta["layers"] != 6 else 3  # reader.json says another depth than the adapters were trained at
    (copy / META).write_text(json.dumps({**meta, "layers": other}))
    with pytest.raises(ReaderError, match=f"the adapters change {meta['layers']} layers"):
        load_reader(copy, model_dir, runtime="torch")
    with pytest.raises(ReaderError, match=f"the adapters change {meta['layers']} layers"):
        load_reader(copy, model_dir, cache=tmp_path / "cache")  # not an export made for the recorded depth


def test_the_shipped_reader_says_what_it_was_trained_on(model_dir):
    reader = load_reader(None, model_dir, runtime="torch")
    trained = {(t["dataset"], t["split"]) for t in reader.meta["trained_on"]}
    assert trained and not trained & {("report", "test"), ("report", "fresh"), ("report", "all")}  # held out
    assert all(f["sha256"] for t in reader.meta["trained_on"] for f in t["files"])
    assert (PACKAGED_DIR / WEIGHTS).stat().st_size < 2_000_000  # a small file: adapters, not a model


def test_the_shipped_reader_prefers_the_sentence_that_answers(model_dir):
    """Questions in several wordings, each with a sentence of the report that answers it and one from the same
    section that does not; the reader ranks the answering one first for most of them."""
    reader = load_reader(None, model_dir, runtime="torch")
    cases = [  # sentences of the report, under their headings
        ("from how many countries did people come to the Vancouver summit?", ["Empowering A Global Community"],
         "Attendees from 50 countries and 335 organizations, with 45% attending for the first time, were inspired "
         "by keynotes featuring cutting-edge topics from industry leaders.",
         "Looking ahead, 2024 promises a regional OpenInfra Asia Summit and a special edition OpenInfra Days series "
         "throughout Europe, fostering more opportunities for collaboration."),
        ("what share of individual members is in asia", ["Introducing OpenInfra Regional Hubs", "OpenInfra Asia"],
         "The community in Asia continues to grow into a strong contingent of the OpenInfra community, currently "
         "representing about 40% of individual OpenInfra Foundation members worldwide.",
         "OpenInfra Asia was established as a Company Limited by Guarantee (CLG) in Singapore."),
        ("In which country is the European hub incorporated?", ["Introducing OpenInfra Regional Hubs",
                                                                 "OpenInfra Europe"],
         "OpenInfra Europe is a Belgian nonprofit association, supported by participating organizations.",
         "Some of their initial priorities are protecting the essence of true open source collaboration in the face "
         "of new regulations, growing the regional ecosystem, and accelerating cloud and container technologies."),
        ("how many folks went to OpenInfra Days in person?", ["OpenInfra Days"],
         "OpenInfra Days in 2023 attracted a total of 1,862 in-person participants and thousands of online "
         "attendees.",
         "OpenInfra Days Korea also included parallel open source communities including the Cloud Native, OCP and "
         "Ceph communities."),
    ]
    wins = 0
    for question, heading, answers, other in cases:
        s = reader.score(question, [pair_text(heading, answers), pair_text(heading, other)])
        wins += bool(s[0] > s[1])
    assert wins >= 3


def test_overlap_names_the_sets_a_reader_was_trained_on():
    from eval.calibrate import overlap
    from eval.datasets import Dataset

    def ds(name, split):
        return Dataset(name=name, split=split, queries=[], key="anchor")

    trained = [{"dataset": "helpers-a", "split": "all"}, {"dataset": "report", "split": "dev"}]
    assert overlap([ds("report", "dev"), ds("report-external", "all"), ds("helpers-a", "all")], trained) == [
        "report/dev", "helpers-a/all"]
    assert overlap([ds("report", "test")], trained) == []
    assert overlap([ds("report", "all")], trained) == ["report/all"]


def test_the_packaged_calibration_was_fitted_with_the_packaged_reader(model_dir):
    from service.ask.calibration import PACKAGED, Calibration, CalibrationError
    from service.ask.reader import read_reader

    cal = Calibration.load(PACKAGED)
    _, _, meta = read_reader(None, model_dir)
    fingerprint = {"adapter_sha256": meta["adapter_sha256"], "base_sha256": meta["base_sha256"], "runtime": RUNTIME}
    assert cal.needs_reader
    cal.verify_reader(fingerprint)
    with pytest.raises(CalibrationError, match="fitted with the reader"):
        cal.verify_reader({**fingerprint, "adapter_sha256": "0" * 64})
    with pytest.raises(CalibrationError, match="fitted with the reader"):
        cal.verify_reader(None)
    from service.ask import Answerer

    with pytest.raises(CalibrationError, match="no reader is loaded"):  # an answerer cannot be built without it
        Answerer(None, cal, None)
    # each tuning set was scored by a reader that had not seen it
    for name, used in cal.metrics["reader_per_set"].items():
        assert name not in used["trained_on"]


def test_processes_exporting_at_once_leave_one_whole_export(tmp_path):
    """Workers starting together with no export yet: each exports into its own directory and renames it into
    place; both load, and one complete export is left (no half-written or private directories)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "service.ask.reader", "--cache", str(tmp_path)]
    procs = [subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    assert not any("RuntimeWarning" in e for _, e in outs)  # the package does not import the module it runs first
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].startswith("reader-"), left
    assert sorted(p.name for p in (tmp_path / left[0]).iterdir()) == ["meta.json", "model-int8.onnx"]
    reader = load_reader(None, None, cache=tmp_path)
    assert reader.score("who chairs the board?", ["Board: Jane chairs it."]).shape == (1,)


def test_each_tuning_set_is_scored_by_a_reader_that_never_saw_it():
    from types import SimpleNamespace

    from eval.calibrate import readers_for
    from eval.datasets import Dataset

    def reader(name, sets, **training):
        return SimpleNamespace(path=name, meta={"base_sha256": "b", "training": {"epochs": 5, **training},
                                                "trained_on": [{"dataset": d, "split": s} for d, s in sets]})

    def ds(name, split):
        return Dataset(name=name, split=split, queries=[], key="anchor")

    served = reader("served", [("report", "dev"), ("report-external", "all")])
    without_dev = reader("without-dev", [("report-external", "all")])
    without_ext = reader("without-ext", [("report", "dev")])
    sets = [ds("report", "dev"), ds("report-external", "all"), ds("report", "test")]
    assert [r.path for r in readers_for(sets, served, [without_dev, without_ext])] == [
        "without-dev", "without-ext", "served"]
    with pytest.raises(ValueError, match="trained on report-external/all"):
        readers_for(sets, served, [without_dev])
    with pytest.raises(ValueError, match="differs in: epochs"):
        readers_for(sets, served, [without_dev, reader("other", [("report", "dev")], epochs=3)])


@pytest.mark.parametrize("argv", [["--save", "out"], ["--lora", "8", "--compress-rank", "64", "--save", "out"]])
def test_reader_cli_refuses_a_save_it_cannot_make(argv, tmp_path, capsys):
    """--save needs a way to store the weights (adapters, or a full fine-tune's cut change), and not both."""
    from eval.cli import main

    assert main(["reader", *argv[:-1], str(tmp_path / argv[-1])]) == 2
    assert "--compress-rank" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
