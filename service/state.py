"""What the service holds once loaded: the embedder, the index, the retriever and the answerer.

Loaded once per app (in the lifespan, on a worker thread so /healthz and /readyz answer meanwhile) and kept
in app.state; nothing lives in module globals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from indexer.embed import Embedder, SentenceTransformerEmbedder
from indexer.store import IndexData, IndexLoadError, load_index
from service.config import Settings
from service.retrieval import FusionConfig, Retriever

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    status: str = "loading"  # loading | ready | error
    error: str | None = None
    embedder: Embedder | None = None
    index: IndexData | None = None
    retriever: Retriever | None = None
    answerer: object | None = None
    loaded_at: float | None = None

    def load(self, embedder: Embedder | None = None) -> None:
        """Load the model and the index; on failure keep the reason for /readyz (never raise)."""
        t0 = time.time()
        try:
            s = self.settings
            self.embedder = embedder or SentenceTransformerEmbedder(s.model_dir, threads=s.torch_threads,
                                                                    name=s.model_name)
            self.index = load_index(s.index_dir, model_name=self.embedder.name, dim=self.embedder.dim,
                                    verify=s.verify_checksums)
            fusion = FusionConfig(alpha=s.fusion_alpha, sentence_weight=s.sentence_weight)
            self.retriever = Retriever(self.index, self.embedder, fusion, cache_size=s.cache_size)
            from service.ask import load_answerer

            # no calibration that fits the index: /v1/ask answers 503 with the reason, search still serves
            self.answerer = load_answerer(self.retriever, [self.index.path, s.index_dir], s.calibration)
            self.retriever.encode_query("warm up")  # first call pays torch's lazy initialisation
            self.loaded_at = time.time()
            self.status = "ready"
            log.info("loaded index %s (%d chunks) in %.1fs", self.index.version, len(self.index.chunks),
                     time.time() - t0)
        except IndexLoadError as e:
            self._fail(str(e))
        except Exception as e:  # model missing, corrupt files: report, do not crash the process
            log.exception("loading failed")
            self._fail(f"{type(e).__name__}: {e}")

    def _fail(self, message: str) -> None:
        self.status = "error"
        self.error = message
        log.error("the service cannot serve: %s", message)
