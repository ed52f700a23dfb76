"""The micro-batcher: concurrent single-query encodes share one call; results and errors reach every caller."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from indexer.embed import FakeEmbedder
from service.batching import MicroBatcher


class SlowRecorder(FakeEmbedder):
    """A fake embedder that records each call's size and takes a while, so that callers pile up."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, batch_size=32, progress=False):
        self.calls.append(len(texts))
        self.entered.set()
        self.release.wait(5)
        if self.fail:
            raise RuntimeError("model exploded")
        return super().encode(texts)


def _concurrently(fn, args):
    out, threads = [None] * len(args), []
    for i, a in enumerate(args):
        t = threading.Thread(target=lambda i=i, a=a: out.__setitem__(i, fn(a)))
        t.start()
        threads.append(t)
    return out, threads


def test_concurrent_queries_are_encoded_together_and_each_gets_its_own_vector():
    inner = SlowRecorder()
    b = MicroBatcher(inner, max_batch=16, max_wait_ms=50)
    first, t0 = _concurrently(lambda q: b.encode([q]), ["first query"])
    inner.entered.wait(5)  # the worker is busy with the first query: the next ones queue up meanwhile
    texts = [f"question number {i} about kata containers" for i in range(8)]
    out, threads = _concurrently(lambda q: b.encode([q]), texts)
    inner.release.set()
    for t in t0 + threads:
        t.join(5)
    assert inner.calls[0] == 1 and sum(inner.calls) == 9 and max(inner.calls[1:]) > 1
    reference = FakeEmbedder().encode(texts)
    for i, v in enumerate(out):
        assert v.shape == (1, reference.shape[1]) and np.allclose(v[0], reference[i])
    assert np.allclose(first[0][0], FakeEmbedder().encode(["first query"])[0])
    b.close()


def test_bulk_calls_bypass_the_queue_and_a_lone_query_is_served():
    inner = SlowRecorder()
    inner.release.set()
    b = MicroBatcher(inner, max_batch=4, max_wait_ms=1)
    assert b.encode(["a b", "c d", "e f"]).shape == (3, inner.dim)
    assert inner.calls == [3]
    assert b.encode(["alone"]).shape == (1, inner.dim)
    assert inner.calls == [3, 1] and b.batches == [1]
    assert (b.name, b.dim, b.max_pieces, b.count_pieces("x y")) == (inner.name, inner.dim, inner.max_pieces, 4)
    b.close()


def test_an_error_reaches_every_waiting_caller():
    inner = SlowRecorder(fail=True)
    inner.release.set()
    b = MicroBatcher(inner, max_batch=8, max_wait_ms=20)
    errors = []

    def call(q):
        try:
            b.encode([q])
        except RuntimeError as e:
            errors.append(str(e))

    _, threads = _concurrently(call, [f"q{i}" for i in range(5)])
    for t in threads:
        t.join(5)
    assert errors == ["model exploded"] * 5
    b.close()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(FakeEmbedder(), max_batch=0)


@pytest.mark.slow
def test_the_service_batches_the_torch_encoder_only_when_asked(tmp_path):
    from indexer.embed import SentenceTransformerEmbedder
    from service.config import Settings
    from service.state import Resources

    batched = Resources(Settings(index_dir=tmp_path, batch_wait_ms=2))._embedder()
    assert isinstance(batched, MicroBatcher) and isinstance(batched.inner, SentenceTransformerEmbedder)
    v = batched.encode(["who chairs the board?"])
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    batched.close()
    plain = Resources(Settings(index_dir=tmp_path, batch_wait_ms=0))._embedder()
    assert isinstance(plain, SentenceTransformerEmbedder)
