from __future__ import annotations


def recall_at_k(ranked: list[str], relevant: set[str] | dict[str, int], k: int) -> float | None:
    """Share of the relevant ids found in the first k of `ranked` (ids deduplicated, first occurrence kept).

    recall@k = |{relevant} ∩ top_k(ranked)| / |{relevant}|; None when nothing is relevant.
    """
    rel = {d for d in relevant if (relevant[d] > 0 if isinstance(relevant, dict) else True)}
    if not rel:
        return None
    top = _dedup(ranked)[:k]
    return len(rel.intersection(top)) / len(rel)


def _dedup(ranked: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for d in ranked:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out
