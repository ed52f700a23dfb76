"""Low-rank changes of a BERT model's projections (the adapter form of LoRA: W + (α/r)·B·A), shared by the two
things trained from the bundled MiniLM: /v1/ask's reader (service.ask.reader) and the query adapter
(indexer.query_adapter). Both change the same projections and store a change the same way."""

from __future__ import annotations

import numpy as np

# (module path inside one BERT layer, attribute): every attention and feed-forward projection
TARGETS = (("attention.self", "query"), ("attention.self", "key"), ("attention.self", "value"),
           ("attention.output", "dense"), ("intermediate", "dense"), ("output", "dense"))


def factor(delta, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A change of one weight (a torch matrix) cut to `rank` by SVD: (A = Vᵀ, B = U·S) of its first `rank` singular
    values, fp16, so that B·A approximates it (scale 1: stored with α = rank)."""
    import torch

    u, s, vt = torch.linalg.svd(delta, full_matrices=False)
    # C order: SVD's factors come column-major, and safetensors writes the buffer as it lies
    return (np.ascontiguousarray(vt[:rank].numpy(), dtype=np.float16),
            np.ascontiguousarray((u[:, :rank] * s[:rank]).numpy(), dtype=np.float16))


def quantize_int8(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """A pair (A: rank × in, B: out × rank) in int8 with one fp16 scale per rank component (A's rows, B's columns:
    each holds one singular direction, so each gets the range of its own values), under the names
    {"A", "A.scale", "B", "B.scale"}: half of fp16's size, which doubles the rank that fits a size limit."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    sa = np.maximum(np.abs(a32).max(axis=1), 1e-12) / 127.0
    sb = np.maximum(np.abs(b32).max(axis=0), 1e-12) / 127.0
    return {"A": np.clip(np.rint(a32 / sa[:, None]), -127, 127).astype(np.int8), "A.scale": sa.astype(np.float16),
            "B": np.clip(np.rint(b32 / sb[None, :]), -127, 127).astype(np.int8), "B.scale": sb.astype(np.float16)}


def pair_of(tensors, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) in float32 of the pair stored under `prefix` (".A", ".B"), fp16 or int8 with their scales
    (quantize_int8). KeyError when a tensor is missing."""
    a, b = tensors[f"{prefix}.A"], tensors[f"{prefix}.B"]
    if a.dtype == np.int8:
        a = a.astype(np.float32) * tensors[f"{prefix}.A.scale"].astype(np.float32)[:, None]
    if b.dtype == np.int8:
        b = b.astype(np.float32) * tensors[f"{prefix}.B.scale"].astype(np.float32)[None, :]
    return a.astype(np.float32), b.astype(np.float32)
