from __future__ import annotations

import math

from eval.metrics.recall import _dedup


def ndcg_at_k(ranked: list[str], relevance: dict[str, int] | set[str], k: int) -> float | None:
    """Normalized discounted cumulative gain with linear gain (as trec_eval and BEIR compute it).

    DCG@k = Σ_{i=1..k} rel_i / log2(i + 1); nDCG@k = DCG@k / IDCG@k, where IDCG@k is the DCG of the
    relevance grades sorted in decreasing order. Ids are deduplicated (first occurrence kept).
    None when nothing is relevant.
    """
    rel = relevance if isinstance(relevance, dict) else {d: 1 for d in relevance}
    grades = sorted((g for g in rel.values() if g > 0), reverse=True)
    if not grades:
        return None
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(_dedup(ranked)[:k]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(grades[:k]))
    return dcg / idcg
