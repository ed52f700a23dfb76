"""Check a helper's question set: fields, counts, styles, answers verbatim in the report, sections among its headings.

    python3 check.py <set directory>      # report.md and headings.txt beside this script (see HELPERS.md)

The kit given to a helper agent is a directory holding INSTRUCTIONS.md, this script, report.md (the corpus
document) and headings.txt (its section titles as the parser reads them, one per line)."""
import collections
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORT = (HERE / "report.md").read_text()
HEADINGS = {h.strip() for h in (HERE / "headings.txt").read_text().splitlines() if h.strip()}
STYLES = {"numeric": 28, "chat": 15, "paraphrase": 16, "person": 13, "list": 12, "why/how": 8, "keyword-ish": 8,
          "multi-hop": 10}
out = Path(sys.argv[1])
problems = []
ids = set()


def rows(name):
    path = out / name
    if not path.exists():
        problems.append(f"{name} is missing")
        return []
    got = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            got.append(json.loads(line))
        except json.JSONDecodeError as e:
            problems.append(f"{name}:{n}: not JSON ({e})")
    return got


ans = rows("questions.jsonl")
una = rows("unanswerable.jsonl")
for name, rs in (("questions.jsonl", ans), ("unanswerable.jsonl", una)):
    for r in rs:
        if set(r) != {"id", "question", "answers", "section", "style"}:
            problems.append(f"{name} {r.get('id')}: fields must be id, question, answers, section, style")
        if r.get("id") in ids:
            problems.append(f"{name} {r.get('id')}: duplicate id")
        ids.add(r.get("id"))
        if not str(r.get("question", "")).strip():
            problems.append(f"{name} {r.get('id')}: empty question")
if len(ans) != 110:
    problems.append(f"questions.jsonl has {len(ans)} rows, not 110")
counts = collections.Counter(r.get("style") for r in ans)
for s, n in STYLES.items():
    if counts.get(s, 0) != n:
        problems.append(f"questions.jsonl: {counts.get(s, 0)} of style {s}, not {n}")
for s in set(counts) - set(STYLES):
    problems.append(f"questions.jsonl: unknown style {s}")
for r in ans:
    a = r.get("answers")
    if not isinstance(a, list) or not a:
        problems.append(f"{r.get('id')}: answers must be a non-empty list")
        continue
    for x in a:
        if not isinstance(x, str) or not x.strip() or x not in REPORT:
            problems.append(f"{r.get('id')}: answer {x!r} does not occur verbatim in report.md")
        elif len(x.split()) > 12:
            problems.append(f"{r.get('id')}: answer {x!r} is longer than 12 words: keep it short")
    if str(r.get("section", "")).strip() not in HEADINGS:
        problems.append(f"{r.get('id')}: section {r.get('section')!r} is not a heading of headings.txt")
kinds = collections.Counter(r.get("style") for r in una)
if len(una) != 55 or kinds.get("near-miss") != 45 or kinds.get("off-topic") != 10:
    problems.append(f"unanswerable.jsonl: {len(una)} rows ({dict(kinds)}); need 45 near-miss + 10 off-topic")
for r in una:
    if r.get("answers") != [] or r.get("section") is not None:
        problems.append(f"{r.get('id')}: an unanswerable question has answers [] and section null")
print("\n".join(problems) if problems else "OK")
sys.exit(1 if problems else 0)
