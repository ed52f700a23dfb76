from __future__ import annotations


def abstention_scores(answerable: list[bool], abstained: list[bool]) -> dict[str, float | None]:
    """Precision and recall of abstaining, treating "the report does not answer" as the positive class.

    precision = |abstained ∧ unanswerable| / |abstained|; recall = |abstained ∧ unanswerable| / |unanswerable|;
    false_abstention = |abstained ∧ answerable| / |answerable|. None where the denominator is 0.
    """
    tp = sum(1 for a, x in zip(answerable, abstained, strict=True) if x and not a)
    n_abst = sum(abstained)
    n_unans = sum(1 for a in answerable if not a)
    n_ans = len(answerable) - n_unans
    fa = sum(1 for a, x in zip(answerable, abstained, strict=True) if x and a)
    return {
        "abstention_precision": tp / n_abst if n_abst else None,
        "abstention_recall": tp / n_unans if n_unans else None,
        "false_abstention": fa / n_ans if n_ans else None,
    }


def refusal_curve(confidences: list[float], thresholds: list[float]) -> list[float | None]:
    """For each threshold t, the share of questions refused at that operating point (confidence < t);
    None for no questions."""
    if not confidences:
        return [None for _ in thresholds]
    return [sum(1 for c in confidences if c < t) / len(confidences) for t in thresholds]
