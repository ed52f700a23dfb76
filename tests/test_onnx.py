"""The ONNX Runtime encoder: exported from the query model (the bundled model with the query adapter merged in, as
`python -m indexer export-onnx` does), same vectors as torch, selectable by setting."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.query_adapter import fingerprint, read_adapter
from tests.conftest import ROOT, make_client

pytestmark = pytest.mark.slow

# what the service encodes questions with: the packaged query adapter's fingerprint, recorded in the export
ADAPTER = fingerprint(read_adapter()[1])
TEXTS = ["Who chairs the OpenInfra Foundation board?", "kata containers 3.0",
         "How many people attended OpenInfra Days China in Beijing, and which companies sponsored it?"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, query_model, query_embedder):
    from indexer.onnx_embed import export_onnx

    return export_onnx(tmp_path_factory.mktemp("onnx") / "onnx", query_model,
                       query_adapter=query_embedder.query_adapter)


def test_export_is_reused_when_up_to_date(onnx_dir, query_model, query_embedder):
    from indexer.onnx_embed import FP32, export_onnx

    before = (onnx_dir / FP32).stat().st_mtime_ns
    assert export_onnx(onnx_dir, query_model, query_adapter=query_embedder.query_adapter) == onnx_dir
    assert (onnx_dir / FP32).stat().st_mtime_ns == before


def test_onnx_vectors_match_torch(onnx_dir, query_embedder):
    from indexer.onnx_embed import OnnxEmbedder

    ref = query_embedder.encode(TEXTS)
    fp32 = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER)
    v = fp32.encode(TEXTS, batch_size=2)
    assert v.shape == ref.shape and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert (v * ref).sum(1).min() > 0.9999  # the same model: float rounding only
    assert [fp32.count_pieces(t) for t in TEXTS] == [query_embedder.count_pieces(t) for t in TEXTS]
    int8 = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER, int8=True).encode(TEXTS)
    assert (int8 * ref).sum(1).min() > 0.9  # quantized: close, not equal
    assert OnnxEmbedder(onnx_dir, query_adapter=ADAPTER).encode([]).shape == (0, ref.shape[1])


def test_service_with_the_onnx_encoder_ranks_like_torch(real_index, client, onnx_dir):
    with make_client(real_index, None, encoder="onnx", onnx_dir=onnx_dir) as c:
        assert c.get("/readyz").status_code == 200
        for q in TEXTS:
            ours = [r["chunk_id"] for r in c.get("/v1/search", params={"q": q}).json()["results"]]
            ref = [r["chunk_id"] for r in client.get("/v1/search", params={"q": q}).json()["results"]]
            assert ours == ref


def test_a_missing_export_is_a_clear_503_when_onnx_is_asked_for(real_index, tmp_path):
    with make_client(real_index, None, encoder="onnx", onnx_dir=tmp_path / "nothing-here") as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "python -m indexer export-onnx" in r.json()["detail"]


def test_auto_uses_the_export_when_there_is_one_and_says_so_when_not(real_index, onnx_dir, tmp_path):
    with make_client(real_index, None, onnx_dir=onnx_dir) as c:  # encoder=auto, the default
        from indexer.query_adapter import fingerprint, read_adapter

        assert c.get("/v1/index").json()["encoder"] == {"kind": "onnx", "note": None,
                                                        "query_adapter": fingerprint(read_adapter()[1])}
    with make_client(real_index, None, onnx_dir=tmp_path / "none", batch_wait_ms=0) as c:
        encoder = c.get("/v1/index").json()["encoder"]
        assert encoder["kind"] == "torch" and "python -m indexer export-onnx" in encoder["note"]
        assert c.get("/v1/search", params={"q": "kata containers"}).status_code == 200


def test_the_fused_model_is_served_and_batches_give_the_single_vectors(onnx_dir, query_embedder):
    """The fused graph (attention, LayerNorm, GELU as ONNX Runtime operators) gives the torch vectors, for one
    text alone and for texts of different lengths padded into one batch."""
    from indexer.onnx_embed import FUSED, OnnxEmbedder

    fp32 = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER)
    assert fp32.path.name == FUSED
    texts = TEXTS + ["a", "the board " * 60]
    ref = query_embedder.encode(texts)
    alone = np.stack([fp32.encode([t])[0] for t in texts])
    batch = fp32.encode(texts, batch_size=len(texts))
    assert (alone * ref).sum(1).min() > 0.9999
    assert (batch * ref).sum(1).min() > 0.9999
    assert np.abs(alone - batch).max() < 1e-4


def test_the_fast_tokenizer_gives_the_transformers_wrapper_word_pieces(onnx_dir):
    """Word pieces from `tokenizers` directly equal the transformers wrapper's (padding to the longest text,
    truncation at the model's limit), and counting never truncates."""
    from transformers import AutoTokenizer

    from indexer.embed import bundled_model_dir
    from indexer.onnx_embed import INPUTS, OnnxEmbedder

    enc = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER)
    wrapper = AutoTokenizer.from_pretrained(str(bundled_model_dir()))
    texts = TEXTS + ["", "naïve café’s 3,000 résumés — OpenInfra’s CI/CD", "word " * 300]
    for batch in ([t] for t in texts):
        ref = wrapper(batch, padding=True, truncation=True, max_length=enc.max_pieces, return_tensors="np")
        ours = enc._feed(batch)
        assert all((ours[k] == ref[k]).all() and ours[k].shape == ref[k].shape for k in INPUTS)
    ref = wrapper(texts, padding=True, truncation=True, max_length=enc.max_pieces, return_tensors="np")
    ours = enc._feed(texts)
    assert all((ours[k] == ref[k]).all() and ours[k].shape == ref[k].shape for k in INPUTS)
    for t in texts:
        assert enc.count_pieces(t) == len(wrapper(t, add_special_tokens=True, truncation=False, verbose=False)
                                           ["input_ids"])
    assert enc.count_pieces("word " * 300) == 302  # not cut at 256


def test_an_export_of_other_weights_than_the_query_encoder_is_never_served(real_index, tmp_path_factory):
    """An export of the plain model (made before the query adapter, or with REPORTQA_QUERY_ADAPTER=none) is
    refused when questions are to be encoded with the adapter: a 503 naming the fix when onnx is asked for, torch
    with a note under auto."""
    from indexer.onnx_embed import export_onnx

    plain = export_onnx(tmp_path_factory.mktemp("plain") / "onnx")
    with make_client(real_index, None, encoder="onnx", onnx_dir=plain) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "other weights" in r.json()["detail"]
        assert f"python -m indexer export-onnx --to {plain}" in r.json()["detail"]
    with make_client(real_index, None, onnx_dir=plain, batch_wait_ms=0) as c:
        encoder = c.get("/v1/index").json()["encoder"]
        assert encoder["kind"] == "torch" and "python -m indexer export-onnx" in encoder["note"]
        assert encoder["query_adapter"]["adapter_sha256"]
    with make_client(real_index, None, onnx_dir=plain, query_adapter="none") as c:  # the plain model: served
        assert c.get("/v1/index").json()["encoder"] == {"kind": "onnx", "note": None, "query_adapter": None}
        assert c.get("/v1/search", params={"q": "kata containers"}).status_code == 200
        r = c.post("/v1/ask", json={"question": "Who chairs the OpenInfra Foundation board?"})
        assert r.status_code == 503 and "plain model" in r.json()["detail"]  # the packaged fit used the adapter


def test_an_adapter_export_that_does_not_say_so_is_not_served_as_the_plain_model(real_index, onnx_dir, tmp_path):
    """An export of adapter-merged weights whose meta records no adapter (as the first adapter release wrote
    them) is refused when the plain model is asked for: its weights are not the plain model's."""
    import json
    import shutil

    from indexer.onnx_embed import META

    unsaid = tmp_path / "onnx"
    shutil.copytree(onnx_dir, unsaid)
    meta = json.loads((unsaid / META).read_text())
    meta.pop("query_adapter")
    (unsaid / META).write_text(json.dumps(meta))
    with make_client(real_index, None, encoder="onnx", onnx_dir=unsaid, query_adapter="none") as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "other weights than the plain model's" in r.json()["detail"]


def test_serving_with_onnx_does_not_import_torch(real_index, onnx_dir):
    """A worker on the ONNX encoder loads neither torch nor transformers (about 190 MB less per worker)."""
    import subprocess
    import sys

    code = ("import sys; from service.config import Settings; from service.state import Resources; "
            f"r = Resources(Settings(index_dir={str(real_index)!r}, onnx_dir={str(onnx_dir)!r}, encoder='onnx')); "
            "assert r.load(), r.error; r.snapshot.retriever.search('who chairs the board?'); "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_onnx_threads_setting_reaches_the_session(real_index, onnx_dir):
    """REPORTQA_ONNX_THREADS (default 2) sets ONNX Runtime's intra-op threads; the torch setting does not."""
    from service.config import Settings

    assert Settings().onnx_threads == 2 and Settings().torch_threads == 1
    for threads in (1, 3):
        with make_client(real_index, None, encoder="onnx", onnx_dir=onnx_dir, onnx_threads=threads,
                         torch_threads=2) as c:
            opts = c.app.state.resources.embedder._session.get_session_options()
            assert opts.intra_op_num_threads == threads
            assert c.get("/v1/search", params={"q": "kata containers"}).status_code == 200


def test_a_concurrent_query_uses_the_one_thread_session_with_the_same_vectors(onnx_dir):
    """With threads > 1 a lone query runs on the multi-thread session and a query arriving while another is
    encoded on a one-thread session; both give the same vectors, bit for bit."""
    from indexer.onnx_embed import OnnxEmbedder

    emb = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER, threads=2)
    assert emb._single is not emb._session
    assert emb._session.get_session_options().intra_op_num_threads == 2
    assert emb._single.get_session_options().intra_op_num_threads == 1
    used = []
    for name in ("_session", "_single"):
        session = getattr(emb, name)
        run = session.run
        wrapper = type("Spy", (), {"run": lambda self, *a, _run=run, _n=name: used.append(_n) or _run(*a)})()
        setattr(emb, name, wrapper)
    texts = ["How many members joined the foundation?", "kata containers", "Where was the OpenInfra Summit held?"]
    alone = emb.encode(texts, batch_size=1)
    assert used == ["_session"] * 3
    used.clear()
    emb._busy = 1  # as if another request were being encoded right now
    together = emb.encode(texts, batch_size=1)
    emb._busy = 0
    assert used == ["_single"] * 3
    np.testing.assert_array_equal(alone, together)
    single = OnnxEmbedder(onnx_dir, query_adapter=ADAPTER, threads=1)
    assert single._single is single._session
