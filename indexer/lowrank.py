"""Low-rank changes of a BERT model's projections (the adapter form of LoRA: W + (α/r)·B·A), shared by the two
things trained from the bundled MiniLM: /v1/ask's reader (service.ask.reader) and the query adapter
(indexer.query_adapter). Both change the same projections and store a change the same way."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# (module path inside one BERT layer, attribute): every attention and feed-forward projection
TARGETS = (("attention.self", "query"), ("attention.self", "key"), ("attention.self", "value"),
           ("attention.output", "dense"), ("intermediate", "dense"), ("output", "dense"))


def factor(delta, rank: int, dtype=np.float16) -> tuple[np.ndarray, np.ndarray]:
    """A change of one weight (a torch matrix) cut to `rank` by SVD: (A = Vᵀ, B = U·S) of its first `rank` singular
    values, in `dtype` (fp16 as stored; float32 to quantize further), so that B·A approximates it (scale 1: stored
    with α = rank)."""
    import torch

    u, s, vt = torch.linalg.svd(delta, full_matrices=False)
    # C order: SVD's factors come column-major, and safetensors writes the buffer as it lies
    return (np.ascontiguousarray(vt[:rank].numpy(), dtype=dtype),
            np.ascontiguousarray((u[:, :rank] * s[:rank]).numpy(), dtype=dtype))


def quantize_int8(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """A pair (A: rank × in, B: out × rank; best from factor(…, dtype=np.float32)) in int8 with one float32 scale per
    rank component (A's rows, B's columns: each holds one singular direction, so each gets the range of its own
    values; float32 because B's columns scale with the singular values, and small ones are subnormal in fp16), under
    the names {"A", "A.scale", "B", "B.scale"}: about half of fp16's size, which doubles the rank that fits a limit."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    sa = (np.maximum(np.abs(a32).max(axis=1), 1e-30) / 127.0).astype(np.float32)
    sb = (np.maximum(np.abs(b32).max(axis=0), 1e-30) / 127.0).astype(np.float32)
    return {"A": np.clip(np.rint(a32 / sa[:, None]), -127, 127).astype(np.int8), "A.scale": sa,
            "B": np.clip(np.rint(b32 / sb[None, :]), -127, 127).astype(np.int8), "B.scale": sb}


def pair_of(tensors: Mapping[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) in float32 of the pair stored under `prefix` (".A", ".B"), fp16 or int8 with their scales
    (quantize_int8). KeyError when a tensor is missing."""
    a, b = tensors[f"{prefix}.A"], tensors[f"{prefix}.B"]
    if a.dtype == np.int8:
        a = a.astype(np.float32) * tensors[f"{prefix}.A.scale"].astype(np.float32)[:, None]
    if b.dtype == np.int8:
        b = b.astype(np.float32) * tensors[f"{prefix}.B.scale"].astype(np.float32)[None, :]
    return a.astype(np.float32), b.astype(np.float32)
