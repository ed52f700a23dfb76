"""What the harness queries: an index directory in this process, or a running service over HTTP.

Both return results in the API's shape, so the same metrics code reads both and gives identical numbers.
"""

from __future__ import annotations

from pathlib import Path

import httpx

API_MAX_K = 50


class InProcessTarget:
    name = "in-process"

    def __init__(self, index_dir: Path, embedder=None, fusion=None, calibration: Path | None = None) -> None:
        from indexer.embed import SentenceTransformerEmbedder
        from indexer.store import load_index
        from service.retrieval import Retriever

        self.embedder = embedder or SentenceTransformerEmbedder()
        index = load_index(Path(index_dir), model_name=self.embedder.name, dim=self.embedder.dim)
        self.retriever = Retriever(index, self.embedder, fusion)  # no fusion: the default for this query encoder
        self.index_dir = Path(index_dir)
        self.calibration = calibration
        self._answerer = None
        self.index_version = index.version

    def reset_cache(self) -> None:
        """Forget cached query vectors, so that each mode's latency includes encoding its queries."""
        self.retriever.clear_cache()

    def search(self, query: str, k: int, mode: str) -> list[dict]:
        from service.results import search_response

        return search_response(self.retriever, query, k=k, mode=mode)["results"]

    @property
    def answerer(self):
        """The service's answerer for this index: the calibration found as the service finds it (or the
        `calibration` file given); an UnavailableAnswerer, whose ask() raises with the reason, if none fits."""
        from service.ask import load_answerer

        if self._answerer is None:
            self._answerer = load_answerer(self.retriever, [self.index_dir], self.calibration)
        return self._answerer

    def ask(self, question: str, k: int = 5, min_confidence: float | None = None) -> dict:
        return self.answerer.ask(question, k=k, min_confidence=min_confidence).as_dict()

    def calibration_info(self) -> dict:
        """The calibration /v1/ask uses (as GET /v1/index reports it), or {"error": why there is none}."""
        return self.answerer.describe()

    def close(self) -> None:
        pass


class HttpTarget:
    name = "http"

    def __init__(self, url: str, timeout: float = 60.0, client: httpx.Client | None = None) -> None:
        self.client = client or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        r = self.client.get("/readyz")
        if r.status_code != 200:
            raise RuntimeError(f"{url} is not ready: {r.status_code} {r.text[:200]}")
        self.index_version = r.json().get("index_version")

    def search(self, query: str, k: int, mode: str) -> list[dict]:
        r = self.client.post("/v1/search", json={"query": query, "k": min(k, API_MAX_K), "mode": mode})
        r.raise_for_status()
        return r.json()["results"]

    def calibration_info(self) -> dict:
        r = self.client.get("/v1/index")
        r.raise_for_status()
        return r.json().get("calibration") or {}

    def ask(self, question: str, k: int = 5, min_confidence: float | None = None) -> dict:
        body = {"question": question, "k": k}
        if min_confidence is not None:
            body["min_confidence"] = min_confidence
        r = self.client.post("/v1/ask", json=body)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self.client.close()
