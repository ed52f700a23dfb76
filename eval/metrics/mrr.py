from __future__ import annotations


def reciprocal_rank(ranks_relevant: list[bool], k: int) -> float:
    """1 / rank of the first relevant item among the first k, 0 if none (MRR@k is its mean).

    `ranks_relevant[i]` says whether the item at rank i+1 is relevant.
    """
    for i, rel in enumerate(ranks_relevant[:k]):
        if rel:
            return 1.0 / (i + 1)
    return 0.0
