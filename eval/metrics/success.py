from __future__ import annotations


def success_at_k(ranked: list[str], relevant: set[str] | dict[str, int], k: int) -> float | None:
    """1.0 if any relevant id is among the first k of `ranked` (e.g. a gold section that occurs twice: either
    counts).

    success@k = 1[top_k(ranked) ∩ {relevant} ≠ ∅]; None when nothing is relevant.
    """
    rel = {d for d in relevant if (relevant[d] > 0 if isinstance(relevant, dict) else True)}
    if not rel:
        return None
    return 1.0 if rel.intersection(ranked[:k]) else 0.0
