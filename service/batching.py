"""A micro-batcher for query encoding: concurrent requests' queries are encoded together.

The torch encoder pays a fixed cost per call (tokenizer, Python, kernel launches) that dominates for one short
query: on this 2-core machine one query costs about 12 ms alone and about 6 ms inside a batch of 8
(README, "Encoders"). `MicroBatcher` wraps any `Embedder`: a single-text `encode` call (what a request
makes) is queued; one worker thread takes the first queued query, waits at most `max_wait_ms` for more (up to
`max_batch`), encodes them in one call and hands every caller its row. A lone request waits at most
`max_wait_ms`. Bulk calls (many texts: the indexer, evaluation) go straight to the wrapped embedder.

The ONNX encoder gains nothing from batching (compute-bound; measured) and runs concurrent calls in
parallel, so the service wraps only the torch encoder.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from indexer.embed import Embedder

log = logging.getLogger(__name__)


class MicroBatcher:
    """An `Embedder` that batches concurrent single-text `encode` calls of the embedder it wraps."""

    def __init__(self, embedder: Embedder, max_batch: int = 16, max_wait_ms: float = 2.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be at least 1 and max_wait_ms at least 0")
        self.inner = embedder
        self.name, self.dim, self.max_pieces = embedder.name, embedder.dim, embedder.max_pieces
        self.query_adapter = getattr(embedder, "query_adapter", None)
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.batches: list[int] = []  # sizes of the last batches (bounded), for tests and the curious
        self._queue: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="encode-batcher", daemon=True)
        self._worker.start()

    def count_pieces(self, text: str) -> int:
        return self.inner.count_pieces(text)

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if len(texts) != 1:
            return self.inner.encode(texts, batch_size=batch_size, progress=progress)
        fut: Future = Future()
        self._queue.put((texts[0], fut))
        return fut.result()[None, :]

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._encode(batch)

    def _encode(self, batch: list[tuple[str, Future]]) -> None:
        try:
            vecs = self.inner.encode([t for t, _ in batch], batch_size=len(batch))
        except BaseException as e:  # every waiting request gets the error, none hangs
            log.exception("batched encoding failed")
            for _, fut in batch:
                fut.set_exception(e)
            return
        self.batches = (self.batches + [len(batch)])[-1000:]
        for (_, fut), v in zip(batch, vecs, strict=True):
            fut.set_result(np.asarray(v, dtype=np.float32))
