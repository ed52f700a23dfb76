"""The query adapter (indexer.query_adapter): read and checked, merged into the base weights the same way every
time, trained and saved by eval/query_adapter.py, recorded by the calibration and refused where it does not fit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXTERNAL_DIR, ROOT, damaged_copy, needs_external


def test_the_packaged_adapter_is_checked_and_made_for_the_bundled_weights(tmp_path):
    from eval.sets import HELPER_SETS
    from indexer.query_adapter import PACKAGED_DIR, WEIGHTS, QueryAdapterError, fingerprint, read_adapter, resolve

    path, meta = read_adapter()
    assert path == PACKAGED_DIR and meta["lora_rank"] == 88 and len(meta["targets"]) == 6
    assert {d["dataset"] for d in meta["trained_on"]} == {f"helpers-{s}" for s in HELPER_SETS}  # never a tuning set
    from safetensors.numpy import load_file

    assert meta["format"] == 2 and meta["storage"] == "int8"
    pairs = load_file(str(path / WEIGHTS))
    assert {v.dtype for k, v in pairs.items() if k.endswith((".A", ".B"))} == {np.dtype(np.int8)}
    assert {v.dtype for k, v in pairs.items() if k.endswith(".scale")} == {np.dtype(np.float32)}
    assert len(pairs) == 4 * 6 * len(meta["targets"])  # A, B and their scales, six layers
    assert fingerprint(meta) == {"adapter_sha256": meta["adapter_sha256"], "base_sha256": meta["base_sha256"]}
    assert resolve("none") is None and resolve("packaged")[1] == meta and resolve(None)[1] == meta
    with pytest.raises(QueryAdapterError, match="checksum"):
        read_adapter(damaged_copy(PACKAGED_DIR, tmp_path / "broken", WEIGHTS))
    with pytest.raises(QueryAdapterError, match="no readable query adapter"):
        read_adapter(tmp_path / "nothing")


def test_another_base_model_is_refused(tmp_path):
    from indexer.embed import bundled_model_dir
    from indexer.query_adapter import QueryAdapterError, read_adapter

    other = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["note"] = "another model"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(QueryAdapterError, match="other base weights"):
        read_adapter(model_dir=other)


def test_the_merged_model_is_the_same_every_time_and_is_base_plus_the_change(tmp_path):
    from safetensors.numpy import load_file

    from indexer.embed import bundled_model_dir
    from indexer.lowrank import pair_of
    from indexer.onnx_embed import weights_digest
    from indexer.query_adapter import WEIGHTS, query_model_dir, read_adapter, weight_name

    a, b = query_model_dir(tmp_path / "a"), query_model_dir(tmp_path / "b")
    assert a.name == b.name and weights_digest(a) == weights_digest(b)
    made = (a / "model.safetensors").stat().st_mtime_ns
    assert query_model_dir(tmp_path / "a") == a and (a / "model.safetensors").stat().st_mtime_ns == made  # made once
    assert not list((tmp_path / "a").glob(".query-model-*"))  # no temporary left behind
    base = load_file(str(bundled_model_dir() / "model.safetensors"))
    merged = load_file(str(a / "model.safetensors"))
    path, meta = read_adapter()
    pairs = load_file(str(path / WEIGHTS))
    key = weight_name(2, "attention.self", "query")
    scale = meta["lora_alpha"] / meta["lora_rank"]
    a_, b_ = pair_of(pairs, "layer.2.attention.self.query")  # fp16, or int8 with its scales
    expect = base[key] + scale * (b_ @ a_)
    assert np.allclose(merged[key], expect, atol=1e-6) and not np.allclose(merged[key], base[key])
    untouched = "encoder.layer.2.attention.output.LayerNorm.weight"
    assert np.array_equal(merged[untouched], base[untouched])
    assert (a / "tokenizer.json").read_bytes() == (bundled_model_dir() / "tokenizer.json").read_bytes()


def test_a_damaged_adapter_is_a_clear_error(tmp_path):
    from indexer.query_adapter import META, PACKAGED_DIR, WEIGHTS, QueryAdapterError, read_adapter

    bad = tmp_path / "bad"
    shutil.copytree(PACKAGED_DIR, bad)
    (bad / META).write_text("[1, 2]")
    with pytest.raises(QueryAdapterError, match="not a query adapter"):
        read_adapter(bad)
    shutil.copy(PACKAGED_DIR / META, bad / META)
    (bad / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(QueryAdapterError, match="checksum"):
        read_adapter(bad)


def test_the_onnx_export_of_each_adapter_has_its_own_directory(tmp_path):
    from indexer.query_adapter import fingerprint, onnx_dir, read_adapter

    fp = fingerprint(read_adapter()[1])
    assert onnx_dir(tmp_path, None) == tmp_path / "encoders" / "onnx"  # where exports before adapters are
    assert onnx_dir(tmp_path, fp).parent == tmp_path / "encoders" and onnx_dir(tmp_path, fp) != onnx_dir(tmp_path, None)
    assert onnx_dir(tmp_path, {**fp, "adapter_sha256": "f" * 64}) != onnx_dir(tmp_path, fp)


def test_the_torch_encoder_merges_into_the_cache_when_the_index_is_read_only(tmp_path, monkeypatch):
    import indexer.query_adapter as qa
    from service.config import Settings
    from service.state import torch_query_model

    made = []

    def fake(cache, adapter_dir=None, model_dir=None):
        if Path(cache) == tmp_path / "index" / "encoders":
            raise PermissionError("read-only file system")
        made.append(Path(cache))
        return Path(cache) / "query-model"

    monkeypatch.setattr(qa, "query_model_dir", fake)
    s = Settings(index_dir=tmp_path / "index", reader_cache=tmp_path / "cache")
    assert torch_query_model(s, qa.PACKAGED_DIR) == tmp_path / "cache" / "query-model"
    assert made == [tmp_path / "cache"]


def test_a_calibration_is_refused_with_another_fusion():
    from dataclasses import replace

    from service.ask.calibration import PACKAGED, Calibration, CalibrationError
    from service.retrieval import ALPHA_ADAPTED, FusionConfig

    cal = Calibration.load(PACKAGED)
    assert cal.fitted_for["fusion"]["alpha"] == ALPHA_ADAPTED
    cal.verify_fusion(FusionConfig(alpha=ALPHA_ADAPTED))
    with pytest.raises(CalibrationError, match="alpha 0.8 fitted, 0.5 served"):
        cal.verify_fusion(FusionConfig(alpha=0.5))
    with pytest.raises(CalibrationError, match="sentence_weight"):
        cal.verify_fusion(replace(FusionConfig(alpha=ALPHA_ADAPTED), sentence_weight=0.25))
    replace(cal, fitted_for={k: v for k, v in cal.fitted_for.items() if k != "fusion"}).verify_fusion(
        FusionConfig(alpha=0.5))  # fitted before fusions were recorded: not checked
    broken = replace(cal, fitted_for={**cal.fitted_for, "fusion": "0.7", "query_adapter": "yes"})
    with pytest.raises(CalibrationError, match="unreadable fusion"):
        broken.verify_fusion(FusionConfig())
    with pytest.raises(CalibrationError, match="unreadable query adapter"):
        broken.verify_query_adapter(None)


@pytest.mark.slow
def test_the_harness_fits_and_evaluates_with_the_fusion_the_service_would_serve(monkeypatch, real_index):
    """REPORTQA_FUSION_ALPHA / REPORTQA_SENTENCE_WEIGHT reach `python -m eval` (run, calibrate) as they reach the
    service, so a calibration refitted after changing them is fitted with what will be served."""
    from eval.cli import _parser, _targets
    from eval.datasets import load_report_set

    args = _parser().parse_args(["calibrate", "--index", str(real_index)])
    args.alpha, args.fusion, args.url = None, None, None
    fusion = _targets(args, load_report_set("dev"), ["hybrid"])["hybrid"].retriever.fusion
    assert (fusion.alpha, fusion.sentence_weight) == (0.8, 0.5)
    monkeypatch.setenv("REPORTQA_FUSION_ALPHA", "0.6")
    monkeypatch.setenv("REPORTQA_SENTENCE_WEIGHT", "0.25")
    fusion = _targets(args, load_report_set("dev"), ["hybrid"])["hybrid"].retriever.fusion
    assert (fusion.alpha, fusion.sentence_weight) == (0.6, 0.25)


def test_the_default_alpha_follows_the_query_encoder(fake_index, fake_embedder, query_embedder):
    from indexer.store import load_index
    from service.retrieval import ALPHA_ADAPTED, ALPHA_PLAIN, Retriever

    index = load_index(fake_index)
    assert Retriever(index, fake_embedder).fusion.alpha == ALPHA_PLAIN
    assert Retriever(index, query_embedder).fusion.alpha == ALPHA_ADAPTED


def test_a_calibration_is_refused_with_another_query_encoder():
    from service.ask.calibration import PACKAGED, Calibration, CalibrationError

    cal = Calibration.load(PACKAGED)
    fitted = cal.fitted_for["query_adapter"]
    cal.verify_query_adapter(fitted)
    with pytest.raises(CalibrationError, match="plain model"):
        cal.verify_query_adapter(None)
    with pytest.raises(CalibrationError, match="REPORTQA_QUERY_ADAPTER"):
        cal.verify_query_adapter({**fitted, "adapter_sha256": "0" * 64})


@pytest.mark.slow
def test_questions_move_and_passages_stay(query_embedder, real_embedder):
    """The adapter changes the vectors of questions, not what the index holds: a question's vector moves, but
    stays near the plain model's (the same space: the index's passage vectors are the plain model's)."""
    qs = ["how many folks actually showed up in Beijing?", "Who chairs the OpenInfra Foundation board?"]
    cos = (query_embedder.encode(qs) * real_embedder.encode(qs)).sum(1)
    assert cos.max() < 0.995 and cos.min() > 0.5


@pytest.mark.slow
def test_training_saves_what_it_scored(tmp_path, real_index):
    """A tiny training run end to end: the saved change, read back and merged as the service merges it, gives
    the vectors of the model the trainer scored as saved."""
    from eval.datasets import load_dataset
    from eval.query_adapter import low_rank_change, merged_model, save_adapter, train, training_items
    from indexer.embed import SentenceTransformerEmbedder, bundled_model_dir
    from indexer.query_adapter import query_model_dir
    from indexer.store import load_index
    from service.retrieval import Retriever

    index = load_index(real_index)
    retriever = Retriever(index, None)
    ds = load_dataset(str(ROOT / "eval" / "datasets" / "helpers-a"))
    items = training_items([ds], retriever, unanswerable=True)
    unanswerable = [i for i in items if i[1] is None]
    assert len(items) - len(unanswerable) > 100 and len(unanswerable) == 55
    assert all(c for _, s, c in items if s is not None)
    sentences = np.asarray(retriever.sentence_vectors, dtype=np.float32)
    chunks = np.asarray(retriever.store.fetch(np.arange(len(retriever.chunks))), dtype=np.float32)
    model, levels = train(items[:12] + unanswerable[:4], sentences, chunks, bundled_model_dir(), epochs=1, lr=1e-4,
                          progress=False)
    assert levels is not None and all(0.0 < x < 1.0 for x in levels)  # cosine levels, moved from 0.6 a little
    change = low_rank_change(model, bundled_model_dir(), 8)
    out = save_adapter(tmp_path / "adapter", change, 8, bundled_model_dir(), {"trained_on": ["a test"]})
    scored = merged_model(bundled_model_dir(), change)
    served = SentenceTransformerEmbedder(query_model_dir(tmp_path / "cache", out))
    texts = [t for t, _, _ in items[:4]]
    ref = scored.encode(texts, normalize_embeddings=True)
    assert (served.encode(texts) * ref).sum(1).min() > 0.9999
    # stored in int8 (half the size): served as scored, and within a hair of fp16's vectors
    small = low_rank_change(model, bundled_model_dir(), 8, storage="int8")
    assert small["layer.0.attention.self.query.A"].dtype == np.int8
    out8 = save_adapter(tmp_path / "adapter8", small, 8, bundled_model_dir(), {"trained_on": ["a test"]})
    assert (out8 / "adapter.safetensors").stat().st_size < 0.6 * (out / "adapter.safetensors").stat().st_size
    assert [json.loads((d / "query_adapter.json").read_text())["storage"] for d in (out, out8)] == ["fp16", "int8"]
    ref8 = merged_model(bundled_model_dir(), small).encode(texts, normalize_embeddings=True)
    served8 = SentenceTransformerEmbedder(query_model_dir(tmp_path / "cache", out8)).encode(texts)
    assert (served8 * ref8).sum(1).min() > 0.9999 and (ref8 * ref).sum(1).min() > 0.999


def test_int8_pairs_keep_the_change():
    """int8 with a scale per rank component: B·A within 2 % of the float pair's (relative Frobenius error), also
    when the singular values span orders of magnitude."""
    from indexer.lowrank import pair_of, quantize_int8

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(1536, 32)))
    v, _ = np.linalg.qr(rng.normal(size=(384, 32)))
    s = np.geomspace(1.0, 1e-3, 32)
    a, b = v.T.astype(np.float32), (u * s).astype(np.float32)  # factor(…, dtype=np.float32)
    q = quantize_int8(a, b)
    assert {k: x.dtype for k, x in q.items()} == {"A": np.int8, "A.scale": np.float32, "B": np.int8,
                                                  "B.scale": np.float32}
    a8, b8 = pair_of({f"p.{k}": x for k, x in q.items()}, "p")
    full = b.astype(np.float32) @ a.astype(np.float32)
    assert np.linalg.norm(b8 @ a8 - full) / np.linalg.norm(full) < 0.02
    # each singular direction keeps its own value, the smallest (1e-3 of the largest) too: a scale per tensor, or
    # per row of B, would crush it
    kept = np.einsum("ir,ij,jr->r", u, b8 @ a8, v)
    assert np.all(np.abs(kept - s) / s < 0.05)
    a16, b16 = pair_of({"p.A": a.astype(np.float16), "p.B": b.astype(np.float16)}, "p")  # fp16: read as they are
    assert np.array_equal(b16, b.astype(np.float16).astype(np.float32)) and a16.dtype == np.float32


def test_an_int8_pair_without_its_scale_is_a_clear_error():
    from indexer.lowrank import TARGETS, quantize_int8
    from indexer.query_adapter import QueryAdapterError, merge_pairs, weight_name

    rng = np.random.default_rng(1)
    shapes = {"intermediate.dense": (1536, 384), "output.dense": (384, 1536)}
    base, pairs = {}, {}
    for path, name in TARGETS:
        out_dim, in_dim = shapes.get(f"{path}.{name}", (384, 384))
        base[weight_name(0, path, name)] = np.zeros((out_dim, in_dim), dtype=np.float32)
        q = quantize_int8(rng.normal(size=(4, in_dim)).astype(np.float32),
                          rng.normal(size=(out_dim, 4)).astype(np.float32))
        pairs.update({f"layer.0.{path}.{name}.{k}": x for k, x in q.items()})
    assert np.abs(merge_pairs(base, pairs, 1.0)[weight_name(0, "attention.self", "query")]).max() > 0
    del pairs["layer.0.attention.self.query.B.scale"]
    with pytest.raises(QueryAdapterError, match="missing or does not fit"):
        merge_pairs(base, pairs, 1.0)


def test_adapter_formats_and_storages(tmp_path):
    """Format 1 (fp16 pairs, no `storage`) is still read; a later format or an unknown storage is refused, so that
    no code reads pairs it does not know how to scale."""
    from indexer.query_adapter import META, PACKAGED_DIR, QueryAdapterError, read_adapter

    def variant(name: str, **change) -> Path:
        d = tmp_path / name
        shutil.copytree(PACKAGED_DIR, d)
        meta = json.loads((d / META).read_text())
        for k, v in change.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        (d / META).write_text(json.dumps(meta))
        return d

    assert read_adapter(variant("one", format=1, storage=None))[1]["format"] == 1
    with pytest.raises(QueryAdapterError, match="format 3"):
        read_adapter(variant("three", format=3))
    with pytest.raises(QueryAdapterError, match="int4"):
        read_adapter(variant("int4", storage="int4"))


@needs_external
def test_the_trainer_refuses_tuning_and_reported_sets(tmp_path, capsys):
    from eval.cli import main

    assert main(["query-adapter", "--train", "report:dev", "--no-progress"]) == 2
    assert "never trains on report dev, report-external or the reported sets (report:dev)" in capsys.readouterr().err
    held_out = str(ROOT / "eval" / "datasets" / "helpers-o")  # a helper set kept for reporting (HELPERS.md)
    assert main(["query-adapter", "--train", held_out, "--no-progress"]) == 2
    assert "never trains on report dev, report-external or the reported sets (helpers-o:all)" in capsys.readouterr().err
    assert main(["reader", "--train", f"report:dev,{held_out}", "--no-progress"]) == 2
    assert "the reader never trains on the reported sets (helpers-o:all)" in capsys.readouterr().err
    assert main(["calibrate", "--sets", f"report:dev,{held_out}", "--no-progress"]) == 2
    assert "never on a reported one" in capsys.readouterr().err
    copy = tmp_path / "renamed"  # the other author's set under another name: refused by its files' checksums
    copy.mkdir()
    for name in ("questions.jsonl", "unanswerable.jsonl"):
        shutil.copy(EXTERNAL_DIR / name, copy / name)
    assert main(["query-adapter", "--train", f"eval/datasets/helpers-a,{copy}", "--no-progress"]) == 2
    assert "renamed:all" in capsys.readouterr().err


def test_training_drops_questions_a_guarded_set_asks(fake_index):
    """The helper sets repeat a few questions of the tuning and reported sets; those are never trained on."""
    from eval.datasets import Dataset, Query
    from eval.query_adapter import normalized, training_items
    from indexer.store import load_index
    from service.retrieval import Retriever

    retriever = Retriever(load_index(fake_index), None)
    asked = [Query("h1", "Who chairs the OpenInfra Asia advisory board?", answers=["Kata Containers"]),
             Query("h2", "Which project released 3.0?", answers=["Kata Containers"])]
    ds = Dataset("helpers-x", "all", asked, "anchor")
    assert len(training_items([ds], retriever)) == 2
    kept = training_items([ds], retriever, {normalized("who chairs the OpenInfra Asia advisory board")})
    assert [t for t, _, _ in kept] == ["Which project released 3.0?"]
    assert normalized("  Who's  THE chair? ") == "who s the chair"


def test_the_no_answer_class():
    """The loss of an answerable question is its positives against every column plus the "no answer" one; an
    unanswerable question's target is that column, weighted; without a null column unanswerable rows are left
    out. The class moves no sentence against another: adding a constant to one question's logits changes its
    answerable loss only through the null column."""
    import torch

    from eval.query_adapter import _multi_positive_loss

    logits = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    null = torch.tensor(0.5)
    lse = [math.log(math.exp(2) + 1 + math.exp(1) + math.exp(0.5)), math.log(3 * math.e + math.exp(0.5))]
    got = _multi_positive_loss(logits, [[0], None], null, null_weight=3.0)
    assert got.item() == pytest.approx(((lse[0] - 2.0) + 3.0 * (lse[1] - 0.5)) / 2, rel=1e-6)
    assert _multi_positive_loss(logits, [[0], None]).item() == pytest.approx(
        math.log(math.exp(2) + 1 + math.e) - 2.0, rel=1e-6)  # no null column: the unanswerable row is left out
    lower = _multi_positive_loss(logits - torch.tensor([[0.0], [1.0]]), [[0], None], null, null_weight=3.0)
    assert lower.item() < got.item()  # an unanswerable question gains by moving away from every sentence


def test_the_leakage_control_drops_close_paraphrases_or_as_many_of_each_kind_at_random():
    from eval.query_adapter import leakage_drop, similar_items

    items = [("Who chairs the OpenInfra Asia advisory board?", [1], [1]),  # a paraphrase of the guarded one
             ("How many commits did Cyborg get?", [2], [2]),
             ("Who chairs the Asia board of OpenInfra?", None, None),  # unanswerable, a paraphrase
             ("What is the capital of France?", None, None),
             ("Which company upgraded to Gold?", [3], [3])]
    guarded = ["who chairs the openinfra asia advisory board", "Where is the summit held?"]
    assert similar_items(items, guarded, 0.5) == [True, False, True, False, False]
    kept, info = leakage_drop(items, guarded, 0.5)
    assert [t for t, _, _ in kept] == [items[1][0], items[3][0], items[4][0]]
    assert info == {"jaccard": 0.5, "at_random": False, "answerable": 1, "unanswerable": 1}
    for seed in range(5):  # at random: one answerable and one unanswerable question, whichever they are
        kept, info = leakage_drop(items, guarded, 0.5, at_random=True, seed=seed)
        assert sum(p is not None for _, p, _ in kept) == 2 and sum(p is None for _, p, _ in kept) == 1
        assert info["at_random"] and (info["answerable"], info["unanswerable"]) == (1, 1)


def test_drop_at_random_without_drop_similar_is_refused(capsys):
    from eval.cli import main

    assert main(["query-adapter", "--drop-at-random", "--no-progress"]) == 2
    assert "give both" in capsys.readouterr().err


def test_export_onnx_prune_removes_only_other_adapters_merges_and_exports(tmp_path, monkeypatch):
    """`python -m indexer export-onnx --prune`: after the export for the packaged adapter, the merged models and
    exports of other adapters under <index>/encoders go; the plain model's export, the current adapter's and
    anything else stay."""
    import indexer.onnx_embed
    import indexer.query_adapter
    from indexer import cli
    from indexer.query_adapter import fingerprint, onnx_dir, read_adapter, stale_encoders

    fp = fingerprint(read_adapter()[1])
    enc = tmp_path / "encoders"
    current_model = enc / f"query-model-{fp['adapter_sha256'][:16]}-{fp['base_sha256'][:8]}"
    keep = [enc / "onnx", onnx_dir(tmp_path, fp), current_model, enc / "notes", enc / ".query-model-x1y2"]
    stale = [enc / "onnx-query-0123456789ab", enc / "query-model-0123456789abcdef-01234567"]
    for d in keep + stale:
        d.mkdir(parents=True)
    assert stale_encoders(tmp_path, fp) == sorted(stale)
    assert stale_encoders(tmp_path, None) == sorted(stale + [onnx_dir(tmp_path, fp), current_model])
    assert stale_encoders(tmp_path / "nothing", fp) == []
    made = []
    monkeypatch.setattr(indexer.onnx_embed, "export_onnx", lambda target, *a, **k: made.append(target) or target)
    monkeypatch.setattr(indexer.query_adapter, "query_model_dir", lambda cache, *a, **k: current_model)
    args = ["export-onnx", "--out", str(tmp_path), "--query-adapter", "packaged"]
    assert cli.main(args) == 0  # without --prune: nothing removed
    assert all(d.is_dir() for d in keep + stale)
    assert cli.main([*args, "--prune"]) == 0
    assert made == [onnx_dir(tmp_path, fp)] * 2
    assert all(d.is_dir() for d in keep) and not any(d.exists() for d in stale)
    stale[0].mkdir()  # --to writes the export elsewhere; --prune still cleans <out>/encoders
    assert cli.main([*args, "--to", str(tmp_path / "elsewhere"), "--prune"]) == 0
    assert made[-1] == tmp_path / "elsewhere" and not stale[0].exists() and all(d.is_dir() for d in keep)


def test_the_makefile_trains_on_the_helper_sets_the_cli_does():
    import re

    from eval.sets import HELPER_SETS, READER_HELPER_SETS

    letters = re.search(r"\$\(foreach s,([a-z ]+),eval/datasets/helpers-\$\(s\)\)", (ROOT / "Makefile").read_text())
    assert letters and letters.group(1).split() == list(READER_HELPER_SETS)
    assert set(READER_HELPER_SETS) <= set(HELPER_SETS)  # the reader's sets are the adapter's, or some of them
