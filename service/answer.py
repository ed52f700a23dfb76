"""/v1/ask: retrieval, an extractive answer, calibrated abstention and token-exact context packing.

No generation model: the answer is the sentence (or the shortest run of sentences) of the top passages that
best answers the question. Whether to answer at all is decided by a small logistic model over signals that
a cosine threshold alone misses (key-term coverage, words the report never uses, answer type, agreement of
the two retrievers), fitted on the eval `dev` split by `python -m eval calibrate`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.text import STOPWORDS, sentence_spans, stem, stem_set, token_spans
from indexer.tokens import count_tokens, get_encoding
from service.results import citation
from service.retrieval import Hit, Retriever, highlight_spans

CALIBRATION = Path(__file__).resolve().parent / "calibration.json"
NOT_ANSWERED = "The report does not say: none of its passages answers this question."

_NUMBER_Q = re.compile(r"\b(how (many|much|large|big|long|often)|what (percentage|percent|share|number|"
                       r"proportion|fraction)|by how much)\b", re.I)
# An amount of money: "how much does X pay", "what was the total revenue", "what is the price of …"
_MONEY_WORDS = (r"price|prices|cost|costs|fee|fees|revenue|revenues|budget|budgets|salary|salaries|income|gdp|"
                r"profit|profits|turnover|spending|expenses")
_MONEY_Q = re.compile(r"\bhow much\b.*\b(pay|pays|paid|cost|costs|charge|charges|spend|spends|spent|earn|earns|"
                      r"earned|raise|raised|donate|donated|invest|invested)\b|\b(what|how much) (is|was|are|were|"
                      r"does|did) (the |its |their |a |an )?([\w'’-]+ ){0,3}(" + _MONEY_WORDS + r")\b", re.I)
_MONEY = re.compile(r"[$€£¥]\s?\d|\b\d[\d,.]*\s?(k|m|bn|million|billion|thousand)?\s?(usd|eur|gbp|dollars?|euros?|"
                    r"pounds?|yuan|rmb)\b|\b(usd|eur|gbp|rmb)\s?\d", re.I)
_DATE_Q = re.compile(r"\b(when|what (year|date|month|day)|which (year|month|day))\b", re.I)
_WHO_Q = re.compile(r"\b(who|whom|whose)\b", re.I)
# "which (Chinese) company…", not "what was the Foundation's goal" (the words between are not verbs or articles)
_ORG_Q = re.compile(r"\b(which|what) ((?!(?:is|was|are|were|does|did|do|has|have|had|will|the|a|an)\b)\w+ ){0,2}"
                    r"(company|companies|organi[sz]ations?|firms?|groups?|members?|"
                    r"projects?|foundations?|communities|university|universities)\b", re.I)
_WHERE_Q = re.compile(r"\b(where|which (city|country|countries|region|regions|university))\b", re.I)
_NUM_WORDS = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
                        r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|hundred|"
                        r"thousand|million|billion|dozen)\b", re.I)
_MONTHS = re.compile(r"\b(january|february|march|april|may|june|july|august|september|october|november|"
                     r"december)\b", re.I)
_ANAPHORA = re.compile(r"\b(it|its|they|their|them|this|that|these|those|he|she|his|her|there|the same|"
                       r"the former|the latter)\b", re.I)

FEATURES = ("dense_top", "sentence_cos", "coverage_top", "coverage_answer", "typed_coverage", "slot_match",
            "oov", "rare_missing", "entity_missing_answer", "lexical_top",
            "asks_number", "asks_name", "typed_no_slot")


def question_type(q: str) -> str:
    if _MONEY_Q.search(q):
        return "money"
    if _NUMBER_Q.search(q):
        return "number"
    if _DATE_Q.search(q):
        return "date"
    if _WHO_Q.search(q):
        return "who"
    if _ORG_Q.search(q):
        return "org"
    if _WHERE_Q.search(q):
        return "where"
    return "other"


_YEAR = re.compile(r"^(19|20)\d\d$")
_HOW_MANY = re.compile(r"\bhow many\s+(.*)", re.I)
GENERIC_UNITS = {"people", "person", "persons", "times", "time", "new", "total", "individual", "different"}
_GENERIC_STEMS = {stem(w) for w in GENERIC_UNITS}
_TIMES = stem("times")
# Nouns for people being counted: "how many people attended" is answered by "1,862 participants".
PERSON_NOUNS = {stem(w) for w in """people persons participants attendees attendance registrations registrants
    individuals members developers contributors visitors users subscribers employees staff delegates speakers
    viewers audience""".split()}
_IRREGULAR_PLURALS = {"people", "staff", "children", "men", "women", "media", "data", "personnel"}


def count_head(question: str) -> str | None:
    """The noun a "how many …" question counts: the first plural among the words after "how many"
    ("registered WeChat official *accounts*", "*registrants* actually showed up"), stemmed."""
    m = _HOW_MANY.search(question)
    if not m:
        return None
    last = None
    for _, _, t in token_spans(m.group(1))[:6]:
        if t in STOPWORDS:
            break
        if t in _IRREGULAR_PLURALS or (len(t) > 3 and t.endswith("s") and not t.endswith(("ss", "us", "is"))):
            return stem(t)
        last = t
    return stem(last) if last else None


def count_unit(question: str) -> list[str]:
    """What a "how many …" question counts ("commits", "member"), generic words ("people") left out."""
    head = count_head(question)
    return [head] if head and head not in _GENERIC_STEMS else []


_DECIMAL = re.compile(r"^\d+\.\d+$")  # "Kata Containers 3.0", "9.3%": a version or a rate, not a count


def _is_number(t: str) -> bool:
    return any(ch.isdigit() for ch in t) or bool(_NUM_WORDS.fullmatch(t))


def counted_near(sentence: str, question: str, unit: str | None) -> bool:
    """A number (not one the question itself holds, not a year) within a few words of what is counted:
    the unit itself, or any noun for people when the question counts "people"."""
    qwords = {t for _, _, t in token_spans(question)}
    toks = [t for _, _, t in token_spans(sentence)]
    stems = [stem(t) for t in toks]
    for i, t in enumerate(toks):
        if not _is_number(t) or t in qwords or _YEAR.match(t) or _DECIMAL.match(t):
            continue
        if unit is None or unit == _TIMES:
            return True
        near = stems[max(0, i - 2) : i] + stems[i + 1 : i + 5]
        if any(n in PERSON_NOUNS for n in near) if unit in _GENERIC_STEMS else any(_has(unit, {n}) for n in near):
            return True
    return False


_ATTRIBUTE_Q = re.compile(r"^\s*(?:who|what|which)\s+(?:is|was|are|were)\s+(?:the\s+|its\s+|their\s+)?"
                          r"((?:[\w'’-]+\s+){0,3}?[\w'’-]+)\s+(?:of|for|at|in|on|behind|to)\b", re.I)


def focus_terms(question: str) -> list[str]:
    """What a question asks *about* the things it names: the counted unit ("commits"), the attribute or role
    ("annual membership fee", "treasurer"). An answer must say it. (Verbs are left out: they are paraphrased
    too freely — "moved up" is "upgraded" — to be required.)"""
    out = count_unit(question)
    m = _ATTRIBUTE_Q.search(question)
    if m:
        out += [stem(t) for _, _, t in token_spans(m.group(1)) if t not in STOPWORDS and t not in GENERIC_UNITS]
    return list(dict.fromkeys(out))


def evidence_window(chunk: dict, i: int) -> str:
    """Sentence `i` of a chunk with what frames it: the section heading and, for a list item, the lines
    ending in ':' that introduce its list ("Gold Member Representatives:")."""
    spans, text = chunk["sentences"], chunk["text"]
    parts = [text[spans[i][0] : spans[i][1]]]
    if not parts[0].lstrip().startswith("- "):
        if i > 0:  # "The event attracted …": what it is was named just before
            parts.append(text[spans[i - 1][0] : spans[i - 1][1]])
    else:
        for a, b in reversed(spans[max(0, i - 20) : i]):
            piece = text[a:b].strip()
            if piece.endswith(":"):
                parts.append(piece)
            elif not piece.startswith("- "):
                break
    return " ".join(chunk["heading_path"]) + " " + " ".join(parts)


_DEMONYM = re.compile(r"^(\w{4,}?)(?:ese|ean|ian)$|^(\w{3,}?)an$|^(\w{3,}n)es$")  # stems: chinese → chines


def _has(term: str, stems: set[str]) -> bool:
    """`term` or a word sharing its first five letters (registered ~ registrations) is among `stems`; a
    demonym also matches its place (Chinese ~ China, Korean ~ Korea, European ~ Europe)."""
    if term in stems:
        return True
    if len(term) >= 5 and any(s[:5] == term[:5] for s in stems if len(s) >= 5):
        return True
    m = _DEMONYM.match(term)
    root = m and (m.group(1) or m.group(2) or m.group(3))
    return bool(root) and any(s.startswith(root) for s in stems)


def type_match(qtype: str, sentence: str, question: str) -> float:
    """Does `sentence` hold something of the kind the question asks for (a quantity, a date, a name)?

    Words and numbers the question itself contains do not count: they are not an answer.
    """
    qwords = {t for _, _, t in token_spans(question)}
    tokens = [(sentence[a:b], t) for a, b, t in token_spans(sentence)]
    if qtype == "money":
        return 1.0 if _MONEY.search(sentence) else 0.0
    if qtype == "number":
        for _word, t in tokens:
            if t in qwords or _YEAR.match(t):
                continue
            if _is_number(t):
                return 1.0
        return 1.0 if re.search(r"\d+\s*%", sentence) else 0.0
    if qtype == "date":
        return 1.0 if any((any(c.isdigit() for c in t) or _MONTHS.fullmatch(t)) and t not in qwords
                          for _, t in tokens) else 0.0
    if qtype in ("who", "where", "org"):
        # a name: a capitalized word the question does not contain (two in a row for a person)
        caps = [word[:1].isupper() and t not in qwords and t not in STOPWORDS for word, t in tokens]
        if qtype == "who":
            return 1.0 if any(a and b for a, b in zip(caps, caps[1:], strict=False)) else (0.5 if any(caps) else 0.0)
        return 1.0 if any(caps[1:]) else 0.0
    return 1.0


@dataclass
class Candidate:
    passage: int  # index into hits
    start: int
    end: int
    text: str
    cos: float
    coverage: float
    type_ok: float
    score: float = 0.0


@dataclass
class Calibration:
    """Logistic models over FEATURES: one for answerability, one for "the answer is right"."""

    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    answerable_w: list[float] = field(default_factory=lambda: [0.0] * (len(FEATURES) + 1))
    correct_w: list[float] = field(default_factory=lambda: [0.0] * (len(FEATURES) + 1))
    threshold: float = 0.5
    sentence_weights: dict[str, float] = field(
        default_factory=lambda: {"cos": 1.0, "coverage": 0.6, "passage": 0.3, "type": 0.2})
    fitted_on: str = "defaults"

    @classmethod
    def load(cls, path: Path = CALIBRATION) -> Calibration:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("features") != list(FEATURES):
            raise ValueError(f"{path} was fitted for other features; run `python -m eval calibrate`")
        data.pop("features", None)
        data.pop("metrics", None)
        return cls(**data)

    def save(self, path: Path = CALIBRATION, metrics: dict | None = None) -> None:
        data = {"features": list(FEATURES), **self.__dict__, "metrics": metrics or {}}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def _prob(self, w: list[float], x: np.ndarray) -> float:
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(1 / (1 + math.exp(-(w[0] + float(np.dot(w[1:], z))))))

    def p_answerable(self, x: np.ndarray) -> float:
        return self._prob(self.answerable_w, x)

    def p_correct(self, x: np.ndarray) -> float:
        return self._prob(self.correct_w, x)


class Answerer:
    def __init__(self, retriever: Retriever, calibration: Calibration | None = None) -> None:
        self.r = retriever
        self.cal = calibration or Calibration.load()
        self.n_docs = max(1, len(retriever.chunks))
        self.df = retriever.doc_freq

    # -- signals ------------------------------------------------------------------------------------
    def idf(self, term: str) -> float:
        d = self.df.get(term, 0)
        return math.log(1 + (self.n_docs - d + 0.5) / (d + 0.5))

    def key_terms(self, question: str) -> list[str]:
        return list(dict.fromkeys(stem(t) for _, _, t in token_spans(question) if t not in STOPWORDS))

    def coverage(self, terms: list[str], text: str) -> float:
        """IDF-weighted share of the question's terms that occur in `text`."""
        if not terms:
            return 0.0
        have = stem_set(text)
        total = sum(self.idf(t) for t in terms)
        return sum(self.idf(t) for t in terms if t in have) / total if total else 0.0

    def retrieval_query(self, question: str, history: list[dict]) -> str:
        """A follow-up ("Which of its members…") is searched together with the user's previous turns."""
        users = [t["content"] for t in history if t["role"] == "user" and t["content"].strip()]
        if not users:
            return question
        content_words = [t for _, _, t in token_spans(question) if t not in STOPWORDS]
        if _ANAPHORA.search(question) or len(content_words) <= 3:
            return " ".join(users[-2:] + [question])
        return question

    # -- answer -------------------------------------------------------------------------------------
    def candidates(self, question: str, qvec: np.ndarray, hits: list[Hit], top_passages: int = 5) -> list[Candidate]:
        terms = self.key_terms(question)
        qtype = question_type(question)
        sims = self.r.sentence_scores(qvec)
        w = self.cal.sentence_weights
        best_fused = max((h.score for h in hits), default=1.0) or 1.0
        out = []
        for pi, h in enumerate(hits[:top_passages]):
            c = h.chunk
            start = int(self.r.sentence_starts[h.index])
            heading = " ".join(c["heading_path"])
            for si, (a, b) in enumerate(c["sentences"]):
                text = c["text"][a:b]
                cov = self.coverage(terms, heading + " " + text)
                tm = type_match(qtype, text, question)
                cand = Candidate(pi, a, b, text, float(sims[start + si]), cov, tm)
                cand.score = (w["cos"] * cand.cos + w["coverage"] * cov + w["type"] * tm
                              + w["passage"] * (h.score / best_fused if best_fused > 0 else 0))
                out.append(cand)
        out.sort(key=lambda x: (-x.score, x.passage, x.start))
        return out

    def answer_span(self, hits: list[Hit], best: Candidate) -> tuple[int, int]:
        """The best sentence; when it introduces a list (ends with a colon), the list too."""
        c = hits[best.passage].chunk
        spans = c["sentences"]
        i = next(j for j, (a, _) in enumerate(spans) if a == best.start)
        end = best.end
        if best.text.rstrip().endswith(":"):
            for a, b in spans[i + 1 : i + 13]:
                piece = c["text"][a:b].strip()
                if piece.startswith("- "):
                    end = b
                elif not piece.endswith(":"):
                    break
        return best.start, end

    def answer_text(self, hits: list[Hit], best: Candidate) -> str:
        s, e = self.answer_span(hits, best)
        return hits[best.passage].chunk["text"][s:e].strip()

    def features(self, question: str, qvec: np.ndarray, hits: list[Hit], best: Candidate | None,
                 lexical_top: float) -> np.ndarray:
        terms = self.key_terms(question)
        if not hits:
            return np.zeros(len(FEATURES))
        top = hits[0].chunk
        idf_total = sum(self.idf(t) for t in terms) or 1.0
        oov = sum(self.idf(t) for t in terms if t not in self.df) / idf_total if terms else 1.0
        ans_text = ""
        if best:
            ans_text = " ".join(hits[best.passage].chunk["heading_path"]) + " " + best.text
        have_answer = stem_set(ans_text)
        known = [t for t in terms if t in self.df]
        rare = sorted(known, key=self.idf, reverse=True)[:2]
        rare_missing = sum(1.0 for t in rare if t not in have_answer) / len(rare) if rare else 1.0
        entities = [stem(t) for i, (a, b, t) in enumerate(token_spans(question))
                    if i > 0 and question[a:b][:1].isupper() and t not in STOPWORDS]
        missing = [e for e in entities if e not in have_answer]
        entity_missing_answer = len(missing) / len(entities) if entities else 0.0
        # Is there a sentence that both covers the question and holds the kind of thing it asks for
        # (typed)? And an answer slot: one that, read with what frames it, holds an answer of that kind, names
        # every entity and the attribute asked about, and for "how many X" has a number next to X?
        qtype = question_type(question)
        typed, slot = 0.0, 0.0
        focus = focus_terms(question) if qtype != "other" else []
        head = count_head(question)
        numbers = [t for _, _, t in token_spans(question) if any(ch.isdigit() for ch in t)]  # "2025", "4.0"
        for h in hits[:3]:
            has_numbers = not numbers or set(numbers) <= {
                t for _, _, t in token_spans(" ".join(h.chunk["heading_path"]) + " " + h.chunk["text"])}
            for i, (a, b) in enumerate(h.chunk["sentences"]):
                sent = h.chunk["text"][a:b]
                tm = type_match(qtype, sent, question)
                if not tm:
                    continue
                window = evidence_window(h.chunk, i)
                typed = max(typed, tm * self.coverage(terms, window))
                here = stem_set(window)
                if tm >= 1 and has_numbers and all(_has(e, here) for e in entities) \
                        and all(_has(f, here) for f in focus) \
                        and (qtype != "number" or counted_near(sent, question, head)):
                    slot = 1.0
        x = {
            "dense_top": float(max(h.dense or 0.0 for h in hits)),
            "sentence_cos": best.cos if best else 0.0,
            "coverage_top": self.coverage(terms, top["embed_text"]),
            "coverage_answer": best.coverage if best else 0.0,
            "typed_coverage": typed,
            "slot_match": slot,
            "oov": oov,
            "rare_missing": rare_missing,
            "entity_missing_answer": entity_missing_answer,
            "lexical_top": math.log1p(max(0.0, lexical_top)),
            "asks_number": 1.0 if qtype in ("number", "date", "money") else 0.0,
            "asks_name": 1.0 if qtype in ("who", "org", "where") else 0.0,
            "typed_no_slot": 1.0 if qtype != "other" and not slot else 0.0,
        }
        return np.array([x[f] for f in FEATURES], dtype=np.float64)

    def analyze(self, question: str, k: int = 5, history: list[dict] | None = None) -> dict:
        """Retrieval, candidates and signals; what ask() and calibration share."""
        rq = self.retrieval_query(question, history or [])
        qvec = self.r.encode_query(rq)
        lexical = self.r.lexical_scores(rq)
        hits = self.r.search(rq, k=max(k, 5), mode="hybrid", query_vec=qvec, lexical=lexical)
        cands = self.candidates(question if rq == question else rq, qvec, hits)
        best = cands[0] if cands else None
        lex_top = float(lexical.max()) if hits else 0.0
        x = self.features(rq, qvec, hits, best, lex_top)
        return {"retrieval_query": rq, "qvec": qvec, "hits": hits, "best": best, "x": x}

    def ask(self, question: str, k: int = 5, max_context_tokens: int = 1500, encoding: str = "cl100k_base",
            history: list[dict] | None = None) -> dict:
        t0 = time.perf_counter()
        enc = get_encoding(encoding)  # UnknownEncoding → 422
        a = self.analyze(question, k, history)
        hits, best, x = a["hits"][:k], a["best"], a["x"]
        if best is not None and best.passage >= len(hits):
            best = None
        p_ans = self.cal.p_answerable(x)
        answerable = best is not None and p_ans >= self.cal.threshold
        passages, order = merge_passages(hits, question, self.r.common_terms)
        answer_n = None
        answer_text = NOT_ANSWERED
        if answerable:
            answer_text = self.answer_text(hits, best)
            answer_n = order[best.passage]
        _, used, _ = pack_context(passages, max_context_tokens, enc, must=answer_n)  # which passages fit
        passages = [p for p in passages if p["n"] in used]
        renumber = {old: new for new, old in enumerate(sorted(used), start=1)}
        for p in passages:
            p["n"] = p["rank"] = renumber[p["n"]]
        answer_n = renumber[answer_n] if answer_n is not None else None
        context, used, n_tokens = pack_context(passages, max_context_tokens, enc, must=answer_n)  # exact
        passages = [p for p in passages if p["n"] in used]
        for p in passages:
            p.pop("_offsets", None)
        confidence = self.cal.p_correct(x) if answerable else 1.0 - p_ans
        return {
            "question": question,
            "answerable": bool(answerable),
            "confidence": round(float(min(1.0, max(0.0, confidence))), 4),
            "answer": {"text": answer_text, "citations": [answer_n] if answerable else []},
            "passages": passages,
            "context": context,
            "context_tokens": n_tokens,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "index_version": self.r.index.version,
            "retrieval_query": a["retrieval_query"],
        }


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
            "highlights": highlight_spans(text, query, common),
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


def pack_context(passages: list[dict], budget: int, enc, must: int | None = None) -> tuple[str, set[int], int]:
    """Numbered passages, whole sentences only, whose total token count is at most `budget`.

    Passages go in by number (the one holding the answer first if it is not already); one that does not fit
    whole keeps its leading sentences that do. Each passage's token count is set here, exactly.
    """
    def count(s: str) -> int:
        return len(enc.encode(s, disallowed_special=()))

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
