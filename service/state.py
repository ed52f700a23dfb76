"""What the service holds: the embedder (loaded once) and an immutable snapshot of the served index version.

A `Snapshot` bundles one loaded index version with its retriever and answerer and never changes. Requests
take the current snapshot once (`service.deps`) and use only it, so a request in flight finishes on the
version it started with, and every response's `index_version` is that snapshot's. A reload (HTTP or SIGHUP)
loads and checks the new version beside the old one — checksums, structure (`indexer.store.load_index`) and
a few probe queries through its retriever and answerer — and then swaps it in with one reference assignment;
if anything fails the old snapshot keeps serving. Reloads and start-up loads are serialized by one lock.

Start-up loads on a worker thread (so /healthz and /readyz answer meanwhile) and retries with doubling waits
(`load_retry_initial` up to `load_retry_max`) until a version loads, so an index built after the service
started is picked up; /readyz says why it is not ready until then. Everything lives in app.state, nothing
in module globals.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from indexer.embed import Embedder, SentenceTransformerEmbedder
from indexer.store import REBUILD_HINT, IndexData, IndexLoadError, load_index, version_dir
from indexer.text import analyze
from service.ask import Answerer, UnavailableAnswerer, load_answerer
from service.ask.reader import Reader, load_reader
from service.backends import make_backend
from service.batching import MicroBatcher
from service.config import Settings
from service.retrieval import MODES, FusionConfig, Retriever, default_alpha

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One loaded index version and what serves it. Never modified: a reload makes a new one."""

    settings: Settings
    embedder: Embedder
    index: IndexData
    retriever: Retriever
    answerer: Answerer | UnavailableAnswerer
    loaded_at: float

    @property
    def version(self) -> str:
        return self.index.version


def probe(snapshot: Snapshot, n: int) -> None:
    """Run `n` probe queries (the opening words of chunks spread over the index, heading path first) through
    every search mode and the answerer; a version whose files load but cannot answer is refused here."""
    chunks = snapshot.index.chunks
    if not chunks:
        raise IndexLoadError(f"index version {snapshot.version} holds no chunks")
    hint = REBUILD_HINT.format(path=snapshot.settings.index_dir)
    picks = sorted({round(i * (len(chunks) - 1) / max(1, n - 1)) for i in range(n)})
    for i in picks:
        query = " ".join(chunks[i].get("embed_text", chunks[i]["text"]).split()[:16]) or chunks[i]["chunk_id"]
        try:
            for mode in MODES:
                if mode == "lexical" and not analyze(query):
                    continue  # only stop words: BM25 has nothing to match
                hits = snapshot.retriever.search(query, k=3, mode=mode)
                if not hits or not all(math.isfinite(h.score) for h in hits):
                    raise IndexLoadError(f"probe query {query!r} found {len(hits)} passages in {mode} mode "
                                         f"(scores {[h.score for h in hits]})")
            if not isinstance(snapshot.answerer, UnavailableAnswerer):
                snapshot.answerer.ask(query, 3)
        except IndexLoadError as e:
            raise IndexLoadError(f"index version {snapshot.version} failed a probe: {e}; {hint}") from e
        except Exception as e:
            raise IndexLoadError(f"index version {snapshot.version} failed a probe query {query!r} "
                                 f"({type(e).__name__}: {e}); {hint}") from e


def query_adapter_of(s: Settings) -> tuple[Path, dict] | None:
    """The query adapter REPORTQA_QUERY_ADAPTER names, read and checked (indexer.query_adapter), or None."""
    from indexer.query_adapter import QueryAdapterError, resolve

    try:
        return resolve(s.query_adapter, s.model_dir)
    except (QueryAdapterError, OSError) as e:
        raise IndexLoadError(f"cannot load the query adapter ({s.query_adapter}): {e}") from e


def torch_query_model(s: Settings, adapter_dir: Path) -> Path:
    """The base weights with the adapter merged in, for the torch encoder: made once under <index root>/encoders
    (where `python -m indexer export-onnx` makes it too), or, when that cannot be written (a read-only index
    volume), under the reader's cache."""
    from indexer.query_adapter import QueryAdapterError, query_model_dir
    from service.ask.reader import default_cache

    try:
        return query_model_dir(s.index_dir / "encoders", adapter_dir, s.model_dir)
    except OSError:
        try:
            return query_model_dir(s.reader_cache or default_cache(), adapter_dir, s.model_dir)
        except (QueryAdapterError, OSError) as e:
            raise IndexLoadError(f"cannot merge the query adapter into the model: {e}") from e
    except QueryAdapterError as e:
        raise IndexLoadError(f"cannot merge the query adapter into the model: {e}") from e


class Resources:
    """The app's serving state: settings, the embedder, the current snapshot, and why it is not ready."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None,
                 on_reload: Callable[[bool], None] | None = None) -> None:
        self.settings = settings
        self.embedder = embedder
        self.snapshot: Snapshot | None = None
        self.status = "loading"  # loading | ready | error (ready once any version is served)
        self.error: str | None = None  # why it is not ready (start-up)
        self.last_reload: dict | None = None  # the outcome of the last reload, for /v1/admin/versions
        self.encoder_kind: str | None = None  # torch | onnx | onnx-int8 once the embedder is built (or given)
        self.encoder_note: str | None = None  # why `auto` fell back to torch
        self.on_reload = on_reload  # told each reload's outcome (True: swapped in), e.g. to count it in /metrics
        self.backend = make_backend(settings)  # None: FAISS in this process; else Qdrant (service.backends)
        self.reader: Reader | None = None  # /v1/ask's reader, loaded with the first calibration that uses one
        self._lock = threading.Lock()

    # read-only views of the current snapshot, for code that does not serve a request (metrics, readyz)
    @property
    def index(self) -> IndexData | None:
        snap = self.snapshot
        return snap.index if snap else None

    @property
    def version(self) -> str | None:
        snap = self.snapshot
        return snap.version if snap else None

    def _embedder(self) -> Embedder:
        if self.embedder is None:  # once per process; reloads reuse it
            from indexer.query_adapter import fingerprint

            s = self.settings
            adapter = query_adapter_of(s)
            fp = fingerprint(adapter[1]) if adapter else None
            onnx_dir = s.onnx_path(fp)
            base_sha = None
            if fp is None:  # the plain model: the export must be of its very weights (not, say, adapter-merged ones)
                from indexer.embed import bundled_model_dir
                from indexer.onnx_embed import weights_digest

                base_sha = weights_digest(Path(s.model_dir) if s.model_dir else bundled_model_dir())
            kind = s.encoder
            if kind == "auto":
                from indexer.onnx_embed import onnx_export_ready

                kind = "onnx" if onnx_export_ready(onnx_dir, s.model_name, fp, base_sha) else "torch"
                if kind == "torch":
                    self.encoder_note = (f"no ONNX export of the query encoder at {onnx_dir} (python -m indexer "
                                         "export-onnx): encoding with torch")
                    log.warning(self.encoder_note)
            if kind == "torch":
                model_dir = torch_query_model(s, adapter[0]) if adapter else s.model_dir
                torch_encoder = SentenceTransformerEmbedder(model_dir, threads=s.torch_threads, name=s.model_name,
                                                            query_adapter=fp)
                # one query costs ~12 ms alone and ~6 ms inside a batch: concurrent requests' queries share calls
                self.embedder = (MicroBatcher(torch_encoder, max_batch=s.batch_max, max_wait_ms=s.batch_wait_ms)
                                 if s.batch_wait_ms > 0 else torch_encoder)
            else:
                from indexer.onnx_embed import OnnxEmbedder, OnnxModelMissing

                try:  # the tokenizer is the base model's: an adapter changes weights only
                    self.embedder = OnnxEmbedder(onnx_dir, s.model_dir, threads=s.onnx_threads, name=s.model_name,
                                                 int8=kind == "onnx-int8", query_adapter=fp, base_sha256=base_sha)
                except OnnxModelMissing as e:
                    raise IndexLoadError(str(e)) from e
            self.encoder_kind = kind
        return self.embedder

    def _reader(self) -> Reader:
        if self.reader is None:  # once per process; reloads reuse it (ReaderError: /v1/ask says why)
            s = self.settings
            self.reader = load_reader(s.reader, s.model_dir, s.reader_threads, s.reader_cache)
        return self.reader

    def _build(self, path: Path) -> Snapshot:
        s = self.settings
        embedder = self._embedder()
        if self.backend is not None:  # Qdrant: the version whose collection the alias names
            path = self.backend.version_path(path)
        index = load_index(path, model_name=embedder.name, dim=embedder.dim, verify=s.verify_checksums)
        alpha = s.fusion_alpha if s.fusion_alpha is not None else default_alpha(embedder)
        fusion = FusionConfig(alpha=alpha, sentence_weight=s.sentence_weight)
        retriever = Retriever(index, embedder, fusion, cache_size=s.cache_size,
                              store=self.backend.store(index) if self.backend is not None else None)
        snapshot = Snapshot(settings=s, embedder=embedder, index=index, retriever=retriever,
                            # no calibration that fits the index: /v1/ask answers 503 with the reason, search serves
                            answerer=load_answerer(retriever, [index.path, s.index_dir], s.calibration, self._reader),
                            loaded_at=time.time())
        probe(snapshot, s.reload_probes)  # also pays torch's lazy initialisation before the first request
        return snapshot

    def _swap(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # the swap: one reference assignment
        self.status, self.error = "ready", None
        # What is loaded now lives as long as the snapshot: move it out of the collector's generations, so that
        # a full collection during a request no longer walks the model's and the index's objects. Unfrozen
        # first, so that the snapshot replaced by a reload can still be collected.
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def load(self) -> bool:
        """Start-up: load the model and the version CURRENT names; on failure keep the reason for /readyz
        (never raise). True once a version is served."""
        t0 = time.time()
        with self._lock:
            if self.snapshot is not None:  # a reload got there first
                return True
            try:
                snapshot = self._build(self.settings.index_dir)
            except IndexLoadError as e:
                self._fail(str(e))
                return False
            except Exception as e:  # the model missing, an unexpected error: report, do not crash the process
                log.exception("loading failed")
                self._fail(f"{type(e).__name__}: {e}")
                return False
            self._swap(snapshot)
        log.info("serving index %s (%d chunks), loaded in %.1fs", snapshot.version, len(snapshot.index.chunks),
                 time.time() - t0)
        return True

    async def keep_loading(self, first: asyncio.Future) -> None:
        """Wait for the first start-up load; while nothing is served, retry with doubling waits."""
        ok = await first
        delay = self.settings.load_retry_initial
        loop = asyncio.get_running_loop()
        while not ok and self.snapshot is None:
            self.error = f"{self.error} (retrying in {delay:g}s)"
            log.warning("retrying the index load in %gs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.load_retry_max)
            ok = await loop.run_in_executor(None, self.load)

    def reload(self, version: str | None = None) -> tuple[str | None, str]:
        """Load `version` (default: the one CURRENT names), check it beside the served one, then swap it in.
        Raises UnknownVersion for a version the root does not hold and IndexLoadError for one that cannot be
        served; either way the served snapshot is unchanged. Returns (previous, current) versions."""
        t0 = time.time()
        with self._lock:
            previous = self.version
            try:
                root = self.settings.index_dir
                path = version_dir(root, version) if version is not None else root
                try:
                    snapshot = self._build(path)
                except IndexLoadError:
                    raise
                except Exception as e:
                    log.exception("reload failed")
                    raise IndexLoadError(f"{type(e).__name__}: {e}") from e
            except IndexLoadError as e:
                self.last_reload = {"ok": False, "at": time.time(), "requested": version, "serving": previous,
                                    "detail": str(e)}
                log.error("reload of %s failed, still serving %s: %s", version or "CURRENT", previous, e)
                if self.on_reload:
                    self.on_reload(False)
                raise
            self._swap(snapshot)
            self.last_reload = {"ok": True, "at": time.time(), "requested": version, "previous": previous,
                                "serving": snapshot.version}
        log.info("reloaded: %s -> %s in %.2fs", previous, snapshot.version, time.time() - t0)
        if self.on_reload:
            self.on_reload(True)
        return previous, snapshot.version

    def reload_quietly(self) -> None:
        """A reload whose outcome only the log (and /v1/admin/versions) reports: SIGHUP's."""
        try:
            self.reload()
        except IndexLoadError:
            pass  # logged by reload(); the old version keeps serving

    def _fail(self, message: str) -> None:
        self.status = "error"
        self.error = message
        log.error("the service cannot serve: %s", message)


def install_sighup(resources: Resources) -> Callable[[], None] | None:
    """SIGHUP → reload what CURRENT names (on a worker thread). Only from the main thread (where signal
    handlers can be installed); returns the function that removes the handler, or None."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        log.info("SIGHUP: reloading the index version CURRENT names")
        loop.run_in_executor(None, resources.reload_quietly)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):
        return None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
