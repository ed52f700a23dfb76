from __future__ import annotations


def auroc(positive: list[float], negative: list[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count one half).

    AUROC = (1 / |P||N|) Σ_{p∈P} Σ_{n∈N} (1[p > n] + ½·1[p = n]); None when either side is empty.
    """
    if not positive or not negative:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    return wins / (len(positive) * len(negative))
