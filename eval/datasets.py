"""Question sets: the report set (JSONL with answers and gold section anchors) and BEIR directories."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parent / "datasets" / "report"
# Another author's questions about the report, read in place (never copied into the repository); relative to
# the repository root, where `python -m eval` runs. `--external-dir` (Makefile: EXTERNAL) points elsewhere.
EXTERNAL_DIR = Path("../shared/datasets/report-external")
EXTERNAL_FILES = {"answerable": ["questions.jsonl"], "unanswerable": ["unanswerable.jsonl"],
                  "all": ["questions.jsonl", "unanswerable.jsonl"], "keywords": ["keywords.jsonl"]}
# the report set's kinds in the external set's style names (for one per-style table across both)
REPORT_STYLES = {"numbers": "numeric", "people": "person", "multi-part": "multi-hop", "paraphrase": "paraphrase",
                 "factoid": "factoid", "unanswerable-close": "near-miss", "unanswerable-offtopic": "off-topic"}


@dataclass
class Query:
    id: str
    text: str
    answerable: bool = True
    kind: str = ""
    answers: list[str] = field(default_factory=list)
    relevance: dict[str, int] = field(default_factory=dict)  # relevant ids (anchors or doc ids) → grade
    style: str = ""  # chat, paraphrase, numeric, …, near-miss, off-topic (per-style tables)
    question: bool = True  # False for search-box keyword queries: retrieval only, never sent to /v1/ask
    sections: list[str] = field(default_factory=list)  # gold headings as text, until resolved to anchors


@dataclass
class Dataset:
    name: str
    split: str
    queries: list[Query]
    key: str  # citation field that relevance ids refer to: "anchor" (report) or "doc_id" (BEIR)
    corpus_file: Path | None = None  # BEIR corpus.jsonl (the report set uses the service's own corpus)
    files: list[Path] = field(default_factory=list)  # the files read (recorded with their sha256 by calibrate)

    def describe(self) -> dict:
        """Name, split, files with their sha256, counts: what a calibration records it was fitted on."""
        return {"dataset": self.name, "split": self.split,
                "files": [{"path": _shown(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                          for p in self.files],
                "questions": sum(q.question for q in self.queries),
                "answerable": sum(q.question and q.answerable for q in self.queries)}


def _shown(p: Path) -> str:
    """A path relative to the current directory (the repository root) when it is under it."""
    try:
        return Path(p).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


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
                                 answers=r.get("answers", []), relevance={a: 1 for a in r.get("gold_anchors", [])},
                                 style=REPORT_STYLES.get(r["kind"], r["kind"])))
    return Dataset(name="report", split=split, queries=queries, key="anchor", files=[path])


def load_external_set(split: str = "all", root: Path | None = None) -> Dataset:
    """The report-external set: `answerable` (questions.jsonl), `unanswerable` (near-miss and off-topic),
    `all` (both; the default), `keywords` (search-box queries, gold section only). Gold sections are heading
    text: `resolve_sections` maps them to anchors through an index."""
    root = Path(root or EXTERNAL_DIR)
    if split not in EXTERNAL_FILES:
        raise DatasetError(f"report-external has no split {split!r} (have: {', '.join(EXTERNAL_FILES)})")
    paths = [root / f for f in EXTERNAL_FILES[split]]
    for p in paths:
        if not p.is_file():
            raise DatasetError(f"{p} not found: report-external is read from {root} (pass --external-dir, or run "
                               "from the repository root next to ../shared)")
    queries = []
    for p in paths:
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            section = r.get("section")
            if "query" in r:  # keywords.jsonl
                queries.append(Query(id=r["id"], text=r["query"], kind="keywords", style="keywords", question=False,
                                     sections=[section] if section else []))
                continue
            answers = r.get("answers") or []
            queries.append(Query(id=r["id"], text=r["question"], answerable=bool(answers), kind=r.get("style", ""),
                                 style=r.get("style", ""), answers=answers, sections=[section] if section else []))
    return Dataset(name="report-external", split=split, queries=queries, key="anchor", files=paths)


def normalize_heading(text: str) -> str:
    """Headings compared as text: stripped (incl. non-breaking spaces), inner whitespace collapsed, casefolded."""
    return " ".join(text.replace("\u00a0", " ").split()).casefold()


def resolve_sections(dataset: Dataset, sections: Iterable[tuple[str, str]]) -> None:
    """Fill each query's `relevance` with the anchors of its gold headings, given (heading, anchor) pairs of an
    index. A heading that occurs twice ("Large Scale SIG") gives both anchors: either counts as a hit."""
    by_heading: dict[str, set[str]] = {}
    for heading, anchor in sections:
        by_heading.setdefault(normalize_heading(heading), set()).add(anchor)
    for q in dataset.queries:
        if not q.sections:
            continue
        anchors = set()
        for h in q.sections:
            found = by_heading.get(normalize_heading(h))
            if not found:
                raise DatasetError(f"{dataset.name} {q.id}: no section {h!r} in the index")
            anchors |= found
        q.relevance = {a: 1 for a in sorted(anchors)}


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


DEFAULT_SPLITS = {"report": "test", "report-external": "all"}


def load_dataset(name_or_path: str, split: str | None = None, external_dir: Path | None = None) -> Dataset:
    """`report` (dev|test|fresh), `report-external` (all|answerable|unanswerable|keywords), a directory in
    report-external's layout (questions.jsonl, unanswerable.jsonl: named after the directory) or a BEIR one."""
    path = Path(name_or_path)
    if name_or_path not in DEFAULT_SPLITS and (path / "questions.jsonl").is_file():
        ds = load_external_set(split or "all", path)  # a set in report-external's layout (eval/datasets/helpers-a)
        ds.name = path.name
        return ds
    split = split or DEFAULT_SPLITS.get(name_or_path, "test")
    if name_or_path == "report":
        return load_report_set(split)
    if name_or_path == "report-external":
        return load_external_set(split, external_dir)
    return load_beir(path, split)
