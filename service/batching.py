"""Micro-batching of concurrent query encodings (not wired in: `BatchingEmbedder(inner)` wraps any Embedder).

Requests are served on worker threads and each encodes one query; torch encodes a batch of N short queries in
far less than N times one. `BatchingEmbedder.encode` queues its texts; the first caller to find no batch in
progress becomes the *leader*: it waits at most `max_wait` seconds (default 2 ms) for more callers, or until
`max_batch` texts are queued, encodes everything queued in one call to the inner embedder, hands every caller
its rows, and wakes the others. Callers that arrive while a batch is being encoded queue up and are encoded
together by the next leader. No thread of its own: nothing to start or stop.

Results are the inner embedder's, row for row (a sentence-transformers model pads a batch, so a vector may
differ from the one-at-a-time vector in the last float bits; the fake embedder's are identical). An error in
the inner `encode` is raised in every caller of that batch. Calls with more than `max_batch` texts, or with a
progress bar (index builds), go straight to the inner embedder.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from indexer.embed import Embedder


@dataclass(eq=False)
class _Request:
    texts: list[str]
    done: bool = False
    result: np.ndarray | None = None
    error: BaseException | None = None
    batched_with: int = field(default=0)  # texts in the batch that served it (for tests and metrics)


class BatchingEmbedder:
    """An Embedder that encodes the texts of concurrent `encode` calls together (see the module docstring)."""

    def __init__(self, inner: Embedder, max_wait: float = 0.002, max_batch: int = 32) -> None:
        if not 0 <= max_wait <= 0.1:
            raise ValueError("max_wait must be between 0 and 0.1 seconds")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_pieces = inner.max_pieces
        self.max_wait = max_wait
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._leading = False
        self.batches = 0  # inner encode calls made for batched requests
        self.requests = 0  # encode calls served through batches

    def count_pieces(self, text: str) -> int:
        return self.inner.count_pieces(text)

    def pending(self) -> int:
        """Texts queued and not yet taken by a leader."""
        with self._cond:
            return sum(len(r.texts) for r in self._pending)

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if progress or len(texts) > self.max_batch or not texts:
            return self.inner.encode(texts, batch_size=batch_size, progress=progress)
        req = _Request(list(texts))
        with self._cond:
            self._pending.append(req)
            self._cond.notify_all()  # a leader waiting for company may now have a full batch
            while True:
                if req.done:
                    return self._outcome(req)
                if not self._leading:
                    self._leading = True
                    break
                self._cond.wait()
        while True:  # the leader
            batch = self._collect()
            self._run(batch)
            if req.done:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
                return self._outcome(req)

    def _collect(self) -> list[_Request]:
        deadline = time.monotonic() + self.max_wait
        with self._cond:
            while sum(len(r.texts) for r in self._pending) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].texts) <= self.max_batch):
                r = self._pending.pop(0)
                batch.append(r)
                size += len(r.texts)
            return batch

    def _run(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        try:
            vecs = self.inner.encode(texts, batch_size=max(len(texts), 1))
            error = None
        except BaseException as e:  # handed to every caller of this batch
            vecs, error = None, e
        with self._cond:
            self.batches += 1
            self.requests += len(batch)
            start = 0
            for r in batch:
                if error is None:
                    r.result = np.asarray(vecs[start:start + len(r.texts)], dtype=np.float32)
                r.error, r.batched_with, r.done = error, len(texts), True
                start += len(r.texts)
            self._cond.notify_all()

    @staticmethod
    def _outcome(req: _Request) -> np.ndarray:
        if req.error is not None:
            raise req.error
        if req.result is None:  # cannot happen: a request is done with a result or an error
            raise RuntimeError("batched encode finished without a result")
        return req.result
