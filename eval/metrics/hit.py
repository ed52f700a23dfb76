from __future__ import annotations


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def hit_at_k(passages: list[str], answers: list[str], k: int) -> float | None:
    """1.0 if any answer string occurs (case and white space folded) in one of the first k passages.

    hit@k = 1[∃ i ≤ k, ∃ a ∈ answers: a ⊆ passage_i]; None when there are no answer strings.
    """
    if not answers:
        return None
    wanted = [_norm(a) for a in answers if a.strip()]
    return 1.0 if any(a in _norm(p) for p in passages[:k] for a in wanted) else 0.0

