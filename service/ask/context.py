"""The LLM-ready context: retrieved hits numbered as passages (neighbouring chunks of one section merged)
and packed, whole sentences only, into an exact token budget."""

from __future__ import annotations

from functools import lru_cache

from indexer.text import sentence_spans
from indexer.tokens import count_tokens
from service.highlights import query_terms, spans_for
from service.results import citation
from service.retrieval import Hit


class BudgetTooSmall(ValueError):
    def __init__(self, budget: int, needed: int) -> None:
        super().__init__(f"max_context_tokens={budget} is too small for even one passage: the smallest "
                         f"complete passage excerpt needs {needed} tokens")
        self.budget, self.needed = budget, needed


def merge_passages(hits: list[Hit], query: str, common: frozenset[str] = frozenset()
                   ) -> tuple[list[dict], dict[int, int]]:
    """Number the hits 1.. in rank order, merging chunks that are neighbours in one section.

    Returns the passages and, for each hit index, the number of the passage that holds it.
    """
    wanted = query_terms(query, common)
    groups: list[list[int]] = []
    for i, h in enumerate(hits):
        c = h.chunk
        for g in groups:
            members = [hits[j].chunk for j in g]
            same = all(m["doc_id"] == c["doc_id"] and m["section_index"] == c["section_index"] for m in members)
            ords = [m["ordinal"] for m in members]
            if same and (c["ordinal"] == min(ords) - 1 or c["ordinal"] == max(ords) + 1):
                g.append(i)
                break
        else:
            groups.append([i])
    passages, order = [], {}
    for n, g in enumerate(groups, start=1):
        members = sorted(g, key=lambda j: hits[j].chunk["ordinal"])
        chunks = [hits[j].chunk for j in members]
        text = "\n\n".join(c["text"] for c in chunks)
        cit = citation(chunks[0])
        cit.update(line_end=chunks[-1]["line_end"], char_end=chunks[-1]["char_end"])
        lead = hits[g[0]]
        passages.append({
            "n": n,
            "rank": n,
            "chunk_id": lead.chunk["chunk_id"],
            "chunk_ids": [c["chunk_id"] for c in chunks],
            "score": round(lead.score, 6),
            "text": text,
            "tokens": count_tokens(text),
            "highlights": spans_for(text, wanted),
            "citation": cit,
            "scores": {"dense": None if lead.dense is None else round(lead.dense, 6),
                       "lexical": round(lead.lexical, 6)},
            "_offsets": _chunk_offsets(chunks),
        })
        for j in g:
            order[j] = n
    return passages, order


def _chunk_offsets(chunks: list[dict]) -> list[tuple[int, int]]:
    """Sentence spans of the merged text (the chunks' own, shifted)."""
    spans, shift = [], 0
    for c in chunks:
        spans += [(a + shift, b + shift) for a, b in c["sentences"]]
        shift += len(c["text"]) + 2
    return spans


def _block(p: dict, text: str) -> str:
    return f"[{p['n']}] {' > '.join(p['citation']['heading_path']) or p['citation']['doc_title']}\n{text}"


@lru_cache(maxsize=2048)
def _count(enc, text: str) -> int:
    """Exact token count of `text`, memoized: the same passages are packed for many questions."""
    return len(enc.encode(text, disallowed_special=()))


def pack_context(passages: list[dict], budget: int, enc, must: int | None = None) -> tuple[str, set[int], int]:
    """Numbered passages, whole sentences only, whose total token count is at most `budget`.

    Passages go in by number (the one holding the answer first if it is not already); one that does not fit
    whole keeps its leading sentences that do. Each passage's token count is set here, exactly.
    """
    def count(s: str) -> int:
        return _count(enc, s)

    if not passages:  # nothing retrieved: an empty context, not an error
        return "", set(), 0
    order = sorted(passages, key=lambda p: (p["n"] != must, p["n"])) if must else list(passages)
    blocks: dict[int, str] = {}
    smallest = None

    def render() -> str:
        return "\n\n".join(blocks[n] for n in sorted(blocks))

    for p in order:
        full = _block(p, p["text"])
        blocks[p["n"]] = full
        if count(render()) <= budget:
            continue
        del blocks[p["n"]]
        spans = p.get("_offsets") or sentence_spans(p["text"])
        kept = None
        for j in range(len(spans) - 1, 0, -1):
            excerpt = p["text"][spans[0][0] : spans[j - 1][1]]
            blocks[p["n"]] = _block(p, excerpt + " …")
            if count(render()) <= budget:
                kept = excerpt
                break
            del blocks[p["n"]]
        if kept is None and spans:
            need = count(_block(p, p["text"][spans[0][0] : spans[0][1]] + " …"))
            smallest = need if smallest is None else min(smallest, need)
    if not blocks or (must is not None and must not in blocks):
        raise BudgetTooSmall(budget, smallest or budget + 1)
    context = render()
    return context, set(blocks), count(context)
