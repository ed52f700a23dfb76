"""Question sets: the report set (JSONL with answers and gold section anchors) and BEIR directories."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parent / "datasets" / "report"


@dataclass
class Query:
    id: str
    text: str
    answerable: bool = True
    kind: str = ""
    answers: list[str] = field(default_factory=list)
    relevance: dict[str, int] = field(default_factory=dict)  # relevant ids (anchors or doc ids) → grade


@dataclass
class Dataset:
    name: str
    split: str
    queries: list[Query]
    key: str  # citation field that relevance ids refer to: "anchor" (report) or "doc_id" (BEIR)
    corpus_file: Path | None = None  # BEIR corpus.jsonl (the report set uses the service's own corpus)


class DatasetError(Exception):
    pass


def load_report_set(split: str, root: Path = REPORT_DIR) -> Dataset:
    path = root / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"no split {split!r} in {root} (have: {', '.join(p.stem for p in root.glob('*.jsonl'))})")
    queries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            queries.append(Query(id=r["id"], text=r["question"], answerable=r["answerable"], kind=r["kind"],
                                 answers=r.get("answers", []), relevance={a: 1 for a in r.get("gold_anchors", [])}))
    return Dataset(name="report", split=split, queries=queries, key="anchor")


def load_beir(root: Path, split: str) -> Dataset:
    root = Path(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    for p in (root / "corpus.jsonl", root / "queries.jsonl", qrels_path):
        if not p.is_file():
            raise DatasetError(f"{p} not found: a BEIR directory has corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    rel: dict[str, dict[str, int]] = {}
    with open(qrels_path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        for row in reader:
            if not row or row[0] == "query-id":
                continue
            qid, did, score = row[0], row[1], int(row[2])
            rel.setdefault(qid, {})[did] = score
    texts = {}
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                texts[str(r["_id"])] = r["text"]
    queries = [Query(id=q, text=texts[q], relevance=rel[q]) for q in sorted(rel, key=_natural) if q in texts]
    return Dataset(name=root.name, split=split, queries=queries, key="doc_id", corpus_file=root / "corpus.jsonl")


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def load_dataset(name_or_path: str, split: str) -> Dataset:
    if name_or_path == "report":
        return load_report_set(split)
    return load_beir(Path(name_or_path), split)
