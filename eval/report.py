"""Reports: JSON (everything), a markdown table a person can read, and a PNG plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from eval.runner import ModeResult

TABLE_METRICS = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "recall@1", "recall@5", "recall@10", "ndcg@10",
                 "mean_passage_tokens", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
ASK_METRICS = ["answer_in_text", "answer_in_text_ignoring_abstention", "abstention_precision",
               "abstention_recall", "false_abstention", "latency_p50_ms", "latency_p95_ms"]


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
    for r in results:
        if r.mode == "ask":
            out.append("")
            out.append("| /v1/ask | " + " | ".join(ASK_METRICS) + " |")
            out.append("|---|" + "---|" * len(ASK_METRICS))
            out.append("| ask | " + " | ".join(_fmt(r.metrics.get(m)) for m in ASK_METRICS) + " |")
    return "\n".join(out)


def write_reports(results: list[ModeResult], meta: dict, out_dir: Path, plot: bool = True) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    stem = f"{meta['dataset']}-{meta['split']}-{date}"
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    payload = {"meta": meta, "modes": {r.mode: {"metrics": r.metrics, "curve": r.curve,
                                                "latencies_ms": r.latencies_ms, "per_query": r.per_query}
                                       for r in results}}
    paths["json"].write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    md = [f"# {meta['dataset']} / {meta['split']} ({meta['queries']} queries)", "",
          f"target: {meta['target']}; index {meta.get('index_version')}; {meta['when']}", "",
          markdown_table(results), ""]
    if meta["dataset"] == "report":
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
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in search:
        ks = sorted(r.curve)
        ax1.plot(ks, [r.curve[k] or 0 for k in ks], marker="o", label=r.mode)
    what = "answer in top k" if meta["dataset"] == "report" else "recall@k"
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
