"""Reports: JSON (everything), a markdown table a person can read, and a PNG plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from eval.runner import ModeResult

TABLE_METRICS = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "recall@1", "recall@5", "recall@10", "ndcg@10",
                 "section_hit@1", "section_hit@5", "mean_passage_tokens", "latency_p50_ms", "latency_p95_ms",
                 "latency_p99_ms"]
ASK_METRICS = ["answer_in_text", "answer_in_text_ignoring_abstention", "abstention_precision",
               "abstention_recall", "false_abstention", "latency_p50_ms", "latency_p95_ms"]
STYLE_COLUMNS = ["hit@1", "hit@5", "section_hit@1", "section_hit@5"]


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def markdown_table(results: list[ModeResult]) -> str:
    search = [r for r in results if r.mode != "ask"]
    out = []
    if search:
        cols = [m for m in TABLE_METRICS if any(r.metrics.get(m) is not None for r in search)]
        out.append("| mode | " + " | ".join(cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        for r in search:
            out.append(f"| {r.mode} | " + " | ".join(_fmt(r.metrics.get(m)) for m in cols) + " |")
        if any(r.metrics.get("section_hit@1") is not None for r in search):
            out += ["", "section_hit@k: a passage of a gold section (a heading that occurs twice: either) in the "
                    "first k."]
    for r in results:
        if r.mode == "ask":
            out.append("")
            out.append("| /v1/ask | " + " | ".join(ASK_METRICS) + " |")
            out.append("|---|" + "---|" * len(ASK_METRICS))
            out.append("| ask | " + " | ".join(_fmt(r.metrics.get(m)) for m in ASK_METRICS) + " |")
            out += ["", ask_table(r)]
    return "\n".join(out)


def _frac(v: float | None, n: float | None) -> str:
    if v is None or not n:
        return "–"
    return f"{v:.3f} ({round(v * n)} of {int(n)})"


def ask_table(r: ModeResult) -> str:
    """The issue's table: answer string in answer.text (refusals count as misses) and refusals by kind."""
    m = r.metrics
    return "\n".join([
        "| answer string in `answer.text` (refusals count as misses) | answerable refused | near-miss refused "
        "| off-topic refused | ECE of `confidence` | AUROC answerable vs near-miss |",
        "|---|---|---|---|---|---|",
        f"| {_frac(m.get('answer_in_text'), m.get('n_answerable'))} "
        f"| {_frac(m.get('answerable_refused'), m.get('n_answerable'))} "
        f"| {_frac(m.get('near_miss_refused'), m.get('n_near_miss'))} "
        f"| {_frac(m.get('off_topic_refused'), m.get('n_off_topic'))} | {_fmt(m.get('ece'))} "
        f"| {_fmt(m.get('auroc_answerable_vs_near_miss'))} |"])


def detail_tables(results: list[ModeResult]) -> str:
    """Per-style tables (search modes and /v1/ask), the reliability table and the refusal curve."""
    out = []
    search = [r for r in results if r.mode != "ask" and r.tables.get("per_style")]
    for r in search:
        styles = r.tables["per_style"]
        cols = [c for c in STYLE_COLUMNS if any(v.get(c) is not None for v in styles.values())]
        out += [f"### {r.mode}: per style", "", "| style | n | " + " | ".join(cols) + " |",
                "|---|---|" + "---|" * len(cols)]
        out += [f"| {s} | {v['n']} | " + " | ".join(_fmt(v.get(c)) for c in cols) + " |" for s, v in styles.items()
                if any(v.get(c) is not None for c in cols)]
        out.append("")
    for r in results:
        if r.mode != "ask" or not r.tables:
            continue
        t = r.tables
        out += ["### /v1/ask: per style", "",
                "| style | n | answered | answer string in answer.text | refused |", "|---|---|---|---|---|"]
        for s, v in t["per_style"].items():
            a = v["answer_in_text"]
            hit = "–" if a is None else f"{int(a)} ({a / v['n']:.2f})"
            out.append(f"| {s} | {v['n']} | {v['answered']} | {hit} | {v['refused']} ({v['refused'] / v['n']:.2f}) |")
        out += ["", f"### /v1/ask: reliability of `confidence` (ECE {_fmt(r.metrics.get('ece'))})", "",
                f"Correct: {t['correct_means']}.", "",
                "| p(correct) bin | n | mean p(correct) | fraction correct |", "|---|---|---|---|"]
        out += [f"| {b['lo']:.1f}–{b['hi']:.1f} | {b['n']} | {b['confidence']:.3f} | {b['accuracy']:.3f} |"
                for b in t["reliability"]]
        c = t["refusal_curve"]
        out += ["", "### /v1/ask: refusal rate by `min_confidence` (refused when confidence < threshold)", "",
                "| min_confidence | answerable refused | near-miss refused | off-topic refused |", "|---|---|---|---|"]
        for i, th in enumerate(c["thresholds"]):
            out.append(f"| {th:.2f} | " + " | ".join(_fmt(c[g][i]) for g in ("answerable", "near-miss", "off-topic"))
                       + " |")
        out.append("")
    return "\n".join(out)


def write_reports(results: list[ModeResult], meta: dict, out_dir: Path, plot: bool = True) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    over_http = meta.get("target", "in-process") != "in-process"  # a --url run does not overwrite the in-process one
    stem = f"{meta['dataset']}-{meta['split']}-{date}" + ("-http" if over_http else "")
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    payload = {"meta": meta, "modes": {r.mode: {"metrics": r.metrics, "curve": r.curve, "tables": r.tables,
                                                "latencies_ms": r.latencies_ms, "per_query": r.per_query}
                                       for r in results}}
    paths["json"].write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    md = [f"# {meta['dataset']} / {meta['split']} ({meta['queries']} queries)", "",
          f"target: {meta['target']}; index {meta.get('index_version')}; {meta['when']}", "",
          markdown_table(results), "", detail_tables(results), ""]
    if meta["dataset"] in ("report", "report-external"):
        md += ["hit@k: an answer string is inside one of the first k passages; mrr@10 on the same;",
               "recall@k and ndcg@10 on gold sections; mean_passage_tokens over the top 5 (cl100k).", ""]
    paths["md"].write_text("\n".join(md), encoding="utf-8")
    if plot:
        paths["png"] = out_dir / f"{stem}.png"
        _plot(results, meta, paths["png"])
    return paths


def _plot(results: list[ModeResult], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = [r for r in results if r.mode != "ask" and r.curve]
    ask = next((r for r in results if r.mode == "ask" and r.tables.get("refusal_curve")), None)
    fig, axes = plt.subplots(1, 3 if ask else 2, figsize=(16.5 if ask else 11, 4.2))
    ax1, ax2 = axes[0], axes[1]
    for r in search:
        ks = sorted(r.curve)
        ax1.plot(ks, [r.curve[k] or 0 for k in ks], marker="o", label=r.mode)
    what = "answer in top k" if meta["dataset"] in ("report", "report-external") else "recall@k"
    ax1.set(xlabel="k", ylabel=what, title=f"{meta['dataset']}/{meta['split']}: {what}", ylim=(0, 1.02))
    ax1.grid(alpha=0.3)
    ax1.legend()
    lat = [r for r in results if r.latencies_ms]
    if lat:
        ax2.boxplot([r.latencies_ms for r in lat], showfliers=True)
        ax2.set_xticks(range(1, len(lat) + 1), [r.mode for r in lat])
        ax2.set(ylabel="ms per query", title=f"latency ({meta['target']})")
        ax2.set_yscale("log")
        ax2.grid(alpha=0.3, axis="y")
    if ask:
        c, ax3 = ask.tables["refusal_curve"], axes[2]
        for group in ("answerable", "near-miss", "off-topic"):
            if c[group][0] is not None:
                ax3.plot(c["thresholds"], c[group], marker=".", label=group)
        ax3.set(xlabel="min_confidence", ylabel="share refused", title="/v1/ask: refusals by operating point",
                ylim=(0, 1.02))
        ax3.grid(alpha=0.3)
        ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
