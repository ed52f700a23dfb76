from __future__ import annotations


def reliability_table(probs: list[float], correct: list[bool], bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted probability: for each non-empty bin [lo, hi) (the last one closed),
    n, the mean predicted probability and the fraction that was correct."""
    if len(probs) != len(correct):
        raise ValueError("probs and correct differ in length")
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == hi)]
        if idx:
            out.append({"lo": lo, "hi": hi, "n": len(idx), "confidence": sum(probs[i] for i in idx) / len(idx),
                        "accuracy": sum(1.0 for i in idx if correct[i]) / len(idx)})
    return out


def expected_calibration_error(probs: list[float], correct: list[bool], bins: int = 10) -> float | None:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width bins; None for no predictions."""
    if not probs:
        return None
    n = len(probs)
    return sum(r["n"] / n * abs(r["accuracy"] - r["confidence"]) for r in reliability_table(probs, correct, bins))
