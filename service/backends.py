"""Where the service's vector scoring runs: FAISS in this process (the default: nothing to do here) or Qdrant.

With `REPORTQA_BACKEND=qdrant` a load (start-up, `POST /v1/admin/reload`, SIGHUP) asks Qdrant which collection
the alias names, loads the index directory's version of the same name (chunk records, catalog, calibration)
and scores through that collection (`indexer.qdrant_store.QdrantStore`): dense search, best sentence, BM25.
A snapshot keeps the concrete collection name, not the alias, so a request in flight finishes on the
collection of its version while the alias moves on; the builder keeps old collections (`--keep`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from indexer.qdrant_store import DEFAULT_ALIAS, QdrantStore, alias_target, collection_name, make_client, version_of
from indexer.store import VERSIONS, IndexData, IndexLoadError, IndexNotFound, version_dir
from service.config import Settings

PUBLISH_HINT = ("publish one with: python -m indexer build --backend qdrant --out {root} (or python -m indexer "
                "qdrant-publish --out {root})")


class QdrantBackend:
    def __init__(self, settings: Settings, client=None) -> None:
        self.settings = settings
        self.alias = settings.qdrant_alias or DEFAULT_ALIAS
        self._client = client
        self._owned = client is None  # a client made here is closed here (local mode on disk holds a lock)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._owned and self._client is not None:
                self._client.close()
                self._client = None

    @property
    def where(self) -> str:
        s = self.settings
        return s.qdrant_url or (f"local mode at {s.qdrant_path}" if s.qdrant_path else "local mode in memory")

    @property
    def client(self):
        with self._lock:  # one client per process, made on first use (it survives reloads)
            if self._client is None:
                s = self.settings
                key = s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None
                self._client = make_client(s.qdrant_url, s.qdrant_path, key)
            return self._client

    def version_path(self, path: Path) -> Path:
        """The version directory to load: the one whose collection the alias names when `path` is the index
        root; a version directory is returned as it is (a reload naming a version)."""
        path = Path(path)
        if path.parent.name == VERSIONS:
            return path
        hint = PUBLISH_HINT.format(root=path)
        target = alias_target(self.client, self.alias)
        if target is None:
            raise IndexNotFound(f"Qdrant ({self.where}) has no alias {self.alias!r}; {hint}")
        version = version_of(self.alias, target)
        if version is None:
            raise IndexLoadError(f"the Qdrant alias {self.alias!r} names {target!r}, not a collection "
                                 f"{collection_name(self.alias, 'VERSION')!r}; {hint}")
        return version_dir(path, version)

    def store(self, index: IndexData) -> QdrantStore:
        """The store of the collection holding `index`'s version, checked against it (point count)."""
        name = collection_name(self.alias, index.version)
        client = self.client
        hint = PUBLISH_HINT.format(root=self.settings.index_dir)
        if not client.collection_exists(name):
            raise IndexNotFound(f"Qdrant ({self.where}) has no collection {name!r} for index version "
                                f"{index.version}; {hint}")
        n = client.count(name, exact=True).count
        if n != len(index.chunks):
            raise IndexLoadError(f"Qdrant collection {name!r} holds {n} points, the index version "
                                 f"{index.version} {len(index.chunks)} chunks; {hint}")
        return QdrantStore(client, name, int(index.manifest["model"]["dim"]), ntotal=n,
                           vocab=index.lexical.vocab_dict, exact=self.settings.qdrant_exact)


def make_backend(settings: Settings, client=None) -> QdrantBackend | None:
    """None for FAISS (the retriever's default store), else the Qdrant backend."""
    return QdrantBackend(settings, client) if settings.backend == "qdrant" else None
