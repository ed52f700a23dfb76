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
