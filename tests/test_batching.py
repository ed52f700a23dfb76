"""service.batching.BatchingEmbedder: concurrent encode calls are encoded together, each caller gets its rows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from indexer.embed import FakeEmbedder
from service.batching import BatchingEmbedder


class GatedEmbedder(FakeEmbedder):
    """Records the size of every encode call; the first call blocks until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, batch_size=32, progress=False):
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        if any("boom" in t for t in texts):
            raise ValueError("the model failed")
        return super().encode(texts, batch_size, progress)


def _start(batcher, texts, results, key):
    def run():
        try:
            results[key] = batcher.encode(texts)
        except Exception as e:  # recorded for the test to look at
            results[key] = e
    t = threading.Thread(target=run)
    t.start()
    return t


def _wait_pending(batcher, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while batcher.pending() < n:
        assert time.monotonic() < deadline, f"only {batcher.pending()} of {n} texts queued"
        time.sleep(0.001)


def _queue_behind_a_blocked_batch(batcher, inner, queries, results):
    threads = [_start(batcher, ["first query"], results, "first")]
    assert inner.entered.wait(30)  # the first leader is encoding (blocked)
    threads += [_start(batcher, [q], results, q) for q in queries]
    _wait_pending(batcher, len(queries))
    inner.release.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return threads


def test_callers_queued_during_a_batch_are_encoded_together_and_get_their_own_rows():
    inner = GatedEmbedder()
    batcher = BatchingEmbedder(inner, max_wait=0.002, max_batch=32)
    queries = [f"flamingo census question {i}" for i in range(7)]
    results: dict = {}
    _queue_behind_a_blocked_batch(batcher, inner, queries, results)
    assert [len(c) for c in inner.calls] == [1, 7]
    reference = FakeEmbedder()
    for q in queries:
        assert results[q].shape == (1, reference.dim)
        np.testing.assert_array_equal(results[q], reference.encode([q]))
    np.testing.assert_array_equal(results["first"], reference.encode(["first query"]))
    assert batcher.batches == 2 and batcher.requests == 8


def test_batches_are_capped_at_max_batch_in_arrival_order():
    inner = GatedEmbedder()
    batcher = BatchingEmbedder(inner, max_wait=0.002, max_batch=4)
    queries = [f"query {i}" for i in range(10)]
    results: dict = {}
    _queue_behind_a_blocked_batch(batcher, inner, queries, results)
    assert [len(c) for c in inner.calls] == [1, 4, 4, 2]
    assert [t for c in inner.calls[1:] for t in c] == queries
    for q in queries:
        np.testing.assert_array_equal(results[q], FakeEmbedder().encode([q]))


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_still_works():
    inner = GatedEmbedder()
    batcher = BatchingEmbedder(inner, max_wait=0.002)
    results: dict = {}
    _queue_behind_a_blocked_batch(batcher, inner, ["boom now", "innocent bystander"], results)
    assert isinstance(results["boom now"], ValueError) and isinstance(results["innocent bystander"], ValueError)
    np.testing.assert_array_equal(batcher.encode(["after the error"]), FakeEmbedder().encode(["after the error"]))


def test_many_threads_each_get_exactly_their_vectors():
    batcher = BatchingEmbedder(FakeEmbedder(), max_wait=0.002, max_batch=8)
    reference = FakeEmbedder()
    texts = {i: [f"text {i}", f"and another {i * 7}"][: 1 + i % 2] for i in range(64)}
    results: dict = {}
    threads = [_start(batcher, texts[i], results, i) for i in range(64)]
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for i in range(64):
        np.testing.assert_array_equal(results[i], reference.encode(texts[i]))
    assert batcher.requests == 64 and batcher.batches <= 64


def test_large_calls_and_progress_bars_bypass_the_queue():
    inner = GatedEmbedder()
    inner.release.set()
    batcher = BatchingEmbedder(inner, max_batch=4)
    batcher.encode([f"t{i}" for i in range(5)])
    batcher.encode(["one"], progress=True)
    assert [len(c) for c in inner.calls] == [5, 1] and batcher.batches == 0
    assert batcher.name == inner.name and batcher.dim == inner.dim and batcher.count_pieces("a b") == 4


@pytest.mark.parametrize("kwargs", [{"max_wait": -1}, {"max_wait": 1.0}, {"max_batch": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        BatchingEmbedder(FakeEmbedder(), **kwargs)
