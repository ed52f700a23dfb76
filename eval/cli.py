"""`python -m eval run|tune`: evaluate retrieval and answering, write reports; tune fusion on a dev split."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from eval.calibrate import MAX_FALSE_ABSTENTION
from eval.datasets import Dataset, DatasetError, load_dataset, resolve_sections
from eval.sets import (
    CALIBRATION_SETS,
    HELD_OUT,
    HELPER_SETS,
    READER_HELPER_SETS,
    TUNING,
    helper_spec,
    parse_sets,
    refused_sets,
)
from indexer.query_adapter import STORAGES
from indexer.store import SCHEMA_VERSION, has_index

ALL_MODES = ("lexical", "dense", "hybrid", "naive", "ask")
DEFAULT_CACHE = Path(".cache/eval")


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def cached_index(corpus: Path, cache: Path, name: str, embedder, config=None) -> Path:
    """Build (once) an index of `corpus` under the cache, keyed by corpus content and chunker settings."""
    from dataclasses import asdict

    from indexer.build import build_index, corpus_files
    from indexer.chunking import ChunkingConfig

    config = config or ChunkingConfig(max_pieces=embedder.max_pieces)
    key = _hash_files(corpus_files(corpus)) + "-" + hashlib.sha1(  # a new index schema: a new cache entry
        json.dumps([asdict(config), SCHEMA_VERSION], sort_keys=True).encode()).hexdigest()[:8]
    out = cache / f"{name}-{key}"
    if not has_index(out):
        print(f"building index {out} …", file=sys.stderr)
        summary = build_index(corpus, out, embedder, config, progress=True)
        print(summary.to_text(), file=sys.stderr)
    return out


def beir_corpus_dir(dataset: Dataset, cache: Path) -> Path:
    """A corpus directory holding only the BEIR corpus.jsonl (a link: the data set is never copied)."""
    d = cache / f"{dataset.name}-corpus"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "corpus.jsonl"
    if not link.exists():
        link.symlink_to(dataset.corpus_file.resolve())
    return d


def _fusion(args):
    from service.retrieval import FusionConfig

    kw = {}
    if args.alpha is not None:
        kw["alpha"] = args.alpha
    if args.fusion:
        kw["method"] = args.fusion
    if getattr(args, "sentence_weight", None) is not None:
        kw["sentence_weight"] = args.sentence_weight
    return FusionConfig(**kw)


def _targets(args, dataset: Dataset, modes: list[str]):
    """(mode → target) for the requested modes."""
    from eval.targets import HttpTarget, InProcessTarget

    if args.url:
        if "naive" in modes:
            print("note: the naive baseline runs in-process only; skipped against a URL", file=sys.stderr)
        t = HttpTarget(args.url)
        return {m: t for m in modes if m != "naive"}
    from indexer.chunking import ChunkingConfig
    from indexer.embed import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(threads=args.threads)
    fusion = _fusion(args)
    if dataset.corpus_file is not None:
        config = ChunkingConfig(max_pieces=embedder.max_pieces,
                                **({"target_tokens": args.target_tokens} if args.target_tokens else {}))
        index_dir = cached_index(beir_corpus_dir(dataset, args.cache), args.cache, dataset.name, embedder, config)
    elif args.target_tokens:
        config = ChunkingConfig(max_pieces=embedder.max_pieces, target_tokens=args.target_tokens)
        index_dir = cached_index(args.corpus, args.cache, "report", embedder, config)
    else:
        index_dir = args.index
        if not has_index(index_dir):
            index_dir = cached_index(args.corpus, args.cache, "report", embedder)
    questions = _query_embedder(args, dataset, embedder)
    # what the flags leave open is what the service would use: REPORTQA_FUSION_ALPHA / REPORTQA_SENTENCE_WEIGHT,
    # else its default for this query encoder (so a calibration is fitted with the fusion it will be served with)
    from service.config import Settings
    from service.retrieval import default_alpha

    served = Settings()
    if getattr(args, "sentence_weight", None) is None:
        fusion = replace(fusion, sentence_weight=served.sentence_weight)
    if args.alpha is None:
        fusion = replace(fusion, alpha=served.fusion_alpha if served.fusion_alpha is not None
                         else default_alpha(questions))
    main = InProcessTarget(index_dir, embedder=questions, fusion=fusion, calibration=getattr(args, "calibration", None))
    targets = {m: main for m in modes if m != "naive"}
    if "naive" in modes:
        naive_cfg = ChunkingConfig(max_pieces=embedder.max_pieces, strategy="paragraph", headings_in_embedding=False)
        corpus = beir_corpus_dir(dataset, args.cache) if dataset.corpus_file is not None else args.corpus
        targets["naive"] = InProcessTarget(cached_index(corpus, args.cache, f"{dataset.name}-naive", embedder,
                                                        naive_cfg), embedder=embedder)
    return targets


def _query_embedder(args, dataset: Dataset, embedder):
    """What the questions are encoded with: `embedder` (the base model, which built the index) with the query
    adapter --query-adapter names merged in; by default, for the report's question sets, the one the service would
    use (REPORTQA_QUERY_ADAPTER, else the packaged one), and none for a BEIR corpus (the adapter is fitted to the
    report's passages; README, *Query adapter*)."""
    from indexer.query_adapter import query_embedder

    setting = getattr(args, "query_adapter", None) or (
        "none" if dataset.corpus_file is not None else os.environ.get("REPORTQA_QUERY_ADAPTER", "packaged"))
    return query_embedder(embedder, args.cache / "encoders", setting, threads=args.threads)


def _resolve_sections(args, dataset: Dataset, targets: dict) -> None:
    """report-external names gold sections by heading: map them to anchors through the index in use (or,
    against a URL, through the corpus parsed as the indexer parses it)."""
    if not any(q.sections for q in dataset.queries):
        return
    local = [t for t in targets.values() if hasattr(t, "retriever")]
    if local:
        pairs = [(c["section"], c["anchor"]) for c in local[0].retriever.chunks]
    else:
        from indexer.build import corpus_files
        from indexer.markdown import parse_markdown

        pairs = [(s.title, s.anchor) for f in corpus_files(args.corpus) if f.suffix == ".md"
                 for s in parse_markdown(f.read_text(encoding="utf-8")).sections if s.title]
    resolve_sections(dataset, pairs)


def cmd_run(args) -> int:
    from eval.report import markdown_table, write_reports
    from eval.runner import evaluate_ask, evaluate_mode

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad:
        print(f"error: unknown mode(s) {', '.join(bad)}; choose from {', '.join(ALL_MODES)}", file=sys.stderr)
        return 2
    dataset = load_dataset(args.dataset, args.split, args.external_dir)
    if args.limit:
        dataset.queries = dataset.queries[: args.limit]
    targets = _targets(args, dataset, modes)
    _resolve_sections(args, dataset, targets)
    results = []
    for m in modes:
        if m not in targets:
            continue
        if m == "ask":
            if dataset.corpus_file is not None or not any(q.question for q in dataset.queries):  # BEIR: no /v1/ask
                continue
            results.append(evaluate_ask(dataset, targets[m], progress=not args.no_progress))
        else:
            mode = "dense" if m == "naive" else m
            r = evaluate_mode(dataset, targets[m], mode, depth=args.k, progress=not args.no_progress)
            r.mode = m
            results.append(r)
    first = next(iter(targets.values()))
    meta = {"dataset": dataset.name, "split": dataset.split, "queries": len(dataset.queries),
            "target": args.url or "in-process", "index_version": getattr(first, "index_version", None),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "k": args.k,
            "fusion": None if args.url else asdict(first.retriever.fusion if hasattr(first, "retriever")
                                                   else _fusion(args))}
    if "ask" in modes and "ask" in targets:
        cal = targets["ask"].calibration_info()
        meta["calibration"] = {k: cal.get(k) for k in ("path", "threshold", "fitted_at", "error") if k in cal}
        if meta["calibration"].get("path"):
            meta["calibration"]["path"] = _portable(meta["calibration"]["path"])
    print(markdown_table(results))
    if not args.no_report:
        paths = write_reports(results, meta, args.out, plot=not args.no_plot)
        print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    if args.show_misses:
        for r in results:
            for row in r.per_query:
                if row.get("hit@1") == 0.0:
                    print(f"[{r.mode}] miss {row['id']} ({row.get('first_hit')}): {row['query']} → {row['top'][:2]}")
    return 0


def cmd_reader(args) -> int:
    """Fit a reader on some question sets, score others; prints AUROC and answer-sentence figures per set."""
    from eval.reader import TOP_CANDIDATES, collect_pairs, figures, score, train
    from service.ask import Answerer

    if args.save and not (args.lora or args.compress_rank):
        print("error: --save writes adapters: give --lora RANK, or --compress-rank RANK for a full fine-tune",
              file=sys.stderr)
        return 2
    if args.lora and args.compress_rank:
        print("error: --compress-rank stores a full fine-tune: not with --lora", file=sys.stderr)
        return 2
    fit_on, scored = parse_sets(args.train, args.external_dir), parse_sets(args.score, args.external_dir)
    kept = refused_sets(fit_on, HELD_OUT)
    if kept:
        print(f"error: the reader never trains on the reported sets ({', '.join(kept)}): they must stay questions "
              "it has not seen", file=sys.stderr)
        return 2
    args.alpha, args.fusion, args.url = None, None, None
    target = _targets(args, fit_on[0], ["hybrid"])["hybrid"]
    # the service's answerer (its sentence ranking and confidence), or an uncalibrated one when none fits
    answerer = target.answerer if isinstance(target.answerer, Answerer) else Answerer(target.retriever, None)
    t0 = time.perf_counter()
    training = [q for d in fit_on for q in collect_pairs(d, answerer)]
    if args.limit:
        training = training[: args.limit]
    tok, model = train(training, epochs=args.epochs, lr=args.lr, neg_per_pos=args.neg_per_pos, seed=args.seed,
                       lora_rank=args.lora, threads=args.threads or 2, layers=args.layers)
    trained, delta = model, None
    if args.compress_rank:  # score what --save ships: the change cut to its rank, fp16
        from eval.reader import low_rank_delta
        from indexer.embed import bundled_model_dir
        from service.ask.reader import merge

        delta = low_rank_delta(trained, bundled_model_dir(), args.compress_rank)
        model = merge(bundled_model_dir(), delta, 1.0, layers=args.layers)
    minutes = (time.perf_counter() - t0) / 60
    trained_on = {f"{d.name}/{d.split}" for d in fit_on}
    out = {"trained_on": sorted(trained_on), "training_minutes": round(minutes, 2), "epochs": args.epochs,
           "lr": args.lr, "layers": args.layers, "lora_rank": args.lora, "neg_per_pos": args.neg_per_pos,
           "seed": args.seed, "sets": {}}
    print("| set | questions | AUROC reader | AUROC confidence | AUROC reader + confidence (by rank) | "
          "reader's sentence holds an answer | service's |")
    print("|---|---|---|---|---|---|---|")
    for d in scored:
        qs = collect_pairs(d, answerer)
        f = figures(qs, score(tok, model, qs))
        name = f"{d.name}/{d.split}" + (" (trained on)" if f"{d.name}/{d.split}" in trained_on else "")
        out["sets"][name] = f
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in (
            f["questions"], f["auroc_reader"], f["auroc_confidence"], f["auroc_reader_plus_confidence"],
            f["reader_sentence_holds_answer"], f["service_sentence_holds_answer"])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.save:
        from eval.reader import save_reader
        from indexer.embed import bundled_model_dir

        info = {"trained_on": [d.describe() for d in fit_on], "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                           time.gmtime()),
                "training": {k: out[k] for k in ("epochs", "lr", "layers", "lora_rank", "neg_per_pos", "seed",
                                                 "training_minutes")}
                | {"questions": len(training), "method": (
                    f"every weight fine-tuned; the change stored at rank {args.compress_rank} (SVD)"
                    if args.compress_rank else f"rank-{args.lora} adapters, base weights frozen")},
                "candidates": {"per_question": TOP_CANDIDATES, "sentence_weights": answerer.sentence_weights},
                "figures": out["sets"]}
        out["saved"] = str(save_reader(args.save, trained, args.lora, bundled_model_dir(), info,
                                       compress_rank=args.compress_rank, delta=delta))
    print(json.dumps(out, indent=1))
    return 0


def cmd_query_adapter(args) -> int:
    """Fit the query adapter on some question sets, score others (dense sentence@1 / passage@1 per set)."""
    import numpy as np

    from eval.query_adapter import dense_figures, low_rank_change, merged_model, save_adapter, train, training_items
    from indexer.embed import bundled_model_dir

    if args.drop_at_random and args.drop_similar is None:
        print("error: --drop-at-random drops as many questions as --drop-similar JACCARD would: give both",
              file=sys.stderr)
        return 2
    fit_on, scored = parse_sets(args.train, args.external_dir), parse_sets(args.score, args.external_dir)
    guarded = parse_sets("report:dev,report:test,report:fresh,report-external:all", args.external_dir)
    guarded_files = {hashlib.sha256(p.read_bytes()).hexdigest() for d in guarded for p in d.files}
    kept = refused_sets(fit_on, HELD_OUT | TUNING, guarded_files)
    if kept:
        print(f"error: the query adapter never trains on report dev, report-external or the reported sets "
              f"({', '.join(kept)}): they must stay questions it has not seen", file=sys.stderr)
        return 2
    from eval.query_adapter import normalized

    exclude = {normalized(q.text) for d in guarded for q in d.queries}
    args.alpha, args.fusion, args.url, args.query_adapter = None, None, None, "none"
    retriever = _targets(args, fit_on[0], ["hybrid"])["hybrid"].retriever  # the index's fixed vectors
    sentences = np.asarray(retriever.sentence_vectors, dtype=np.float32)
    chunks = np.asarray(retriever.store.fetch(np.arange(len(retriever.chunks))), dtype=np.float32)
    base = bundled_model_dir()
    items = training_items(fit_on, retriever, exclude, unanswerable=args.null_weight > 0)
    repeated = len(training_items(fit_on, retriever, unanswerable=args.null_weight > 0)) - len(items)
    if repeated and not args.no_progress:
        print(f"{repeated} training questions dropped: a tuning or reported set asks them too", flush=True)
    dropped_similar = None
    if args.drop_similar is not None:  # the leakage control: without the close paraphrases, or as many at random
        from eval.query_adapter import leakage_drop

        items, dropped_similar = leakage_drop(items, [q.text for d in guarded for q in d.queries], args.drop_similar,
                                              args.drop_at_random, args.seed)
        print(f"{dropped_similar['answerable']} answerable and {dropped_similar['unanswerable']} unanswerable training "
              f"questions dropped ({'at random, as many as ' if args.drop_at_random else ''}those whose word set has "
              f"a Jaccard similarity ≥ {args.drop_similar} with a tuning or reported set's question)", flush=True)
    t0 = time.perf_counter()
    model, levels = train(items, sentences, chunks, base, epochs=args.epochs, lr=args.lr, scale=args.scale,
                          seed=args.seed, progress=not args.no_progress, null_weight=args.null_weight)
    minutes = round((time.perf_counter() - t0) / 60, 2)
    change = low_rank_change(model, base, args.rank, storage=args.storage)
    shipped = merged_model(base, change)
    plain = merged_model(base, {})
    unanswerable = sum(1 for _, p, _ in items if p is None)
    out = {"trained_on": [f"{d.name}/{d.split}" for d in fit_on], "questions": len(items) - unanswerable,
           "unanswerable": unanswerable, "dropped": repeated, "training_minutes": minutes,
           "dropped_similar": dropped_similar,
           "no_answer_levels": levels and {"sentence": round(levels[0], 4), "passage": round(levels[1], 4)},
           "sets": {}}
    keys = ("sentence@1", "passage@1", "auroc_top_sentence", "auroc_top_passage")
    print("| set | questions (near-miss) | " + " | ".join(f"{k} plain | trained | as saved" for k in keys) + " |")
    print("|---|---|" + "---|---|---|" * len(keys))
    for d in scored:
        its = training_items([d], retriever)
        near = [q.text for q in d.queries if q.question and q.style == "near-miss"]
        f = [dense_figures(m, its, sentences, chunks, near) for m in (plain, model, shipped)]
        out["sets"][f"{d.name}/{d.split}"] = {"plain": f[0], "trained": f[1], "saved": f[2]}
        print(f"| {d.name}/{d.split} | {len(its)} ({len(near)}) | " + " | ".join(
            f"{x[k]:.3f}" if k in x else "—" for k in keys for x in f) + " |")
    if args.save:
        info = {"trained_on": [d.describe() for d in fit_on],
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "training": {"epochs": args.epochs, "lr": args.lr, "scale": args.scale, "seed": args.seed,
                             "null_weight": args.null_weight, "no_answer_levels": out["no_answer_levels"],
                             "questions": out["questions"], "unanswerable": unanswerable,
                             "training_minutes": minutes,
                             "dropped_as_asked_by_a_tuning_or_reported_set": repeated,
                             "dropped_similar": out["dropped_similar"],
                             "method": "every weight fine-tuned on questions against the index's fixed sentence "
                                       "and passage vectors" + (f", with a 'no answer' class that the unanswerable "
                                                                f"questions target (weight {args.null_weight})"
                                                                if args.null_weight > 0 else "")
                                       + f"; the change stored at rank {args.rank} (SVD), {args.storage}"},
                "index": {"version": retriever.index.version, "chunker": retriever.index.manifest.get("chunker")},
                "figures": out["sets"]}
        out["saved"] = str(save_adapter(args.save, change, args.rank, base, info))
    print(json.dumps(out, indent=1))
    return 0


def cmd_tune(args) -> int:
    """Grid over fusion settings on a tuning split; prints the table and the best setting."""
    from eval.runner import evaluate_mode
    from service.retrieval import FusionConfig

    dataset = load_dataset(args.dataset, args.split, args.external_dir)
    args.alpha, args.fusion, args.url = None, None, None
    target = _targets(args, dataset, ["hybrid"])["hybrid"]
    _resolve_sections(args, dataset, {"hybrid": target})
    grid = [FusionConfig(method="minmax", alpha=a / 10, sentence_weight=w)
            for w in (0.0, 0.25, 0.5, 0.75, 1.0) for a in range(0, 11)] + \
           [FusionConfig(method="rrf", rrf_k=k) for k in (10, 30, 60)]
    metric = args.metric
    best = None
    print(f"| fusion | {metric} | hit@1 | hit@5 | mrr@10 | ndcg@10 |")
    print("|---|---|---|---|---|---|")
    for f in grid:
        target.retriever.fusion = f
        r = evaluate_mode(dataset, target, "hybrid", depth=args.k, progress=False, fresh_cache=False)
        m = r.metrics
        label = (f"{f.method} alpha={f.alpha} sentence_weight={f.sentence_weight}" if f.method == "minmax"
                 else f"rrf k={f.rrf_k}")
        print(f"| {label} | " + " | ".join("–" if m.get(x) is None else f"{m[x]:.3f}" for x in
                                           (metric, "hit@1", "hit@5", "mrr@10", "ndcg@10")) + " |")
        if best is None or (m.get(metric) or 0) > best[0] + 1e-12:
            best = (m.get(metric) or 0, label)
    print(f"\nbest on {dataset.name}/{dataset.split} by {metric}: {best[1]} ({best[0]:.4f})")
    return 0


FOLD_READERS = Path(__file__).resolve().parent / "readers"  # readers trained without one tuning set each


def cmd_calibrate(args) -> int:
    """Fit on the tuning sets; write the artefact to --write, else REPORTQA_CALIBRATION, else beside the index."""
    from eval.calibrate import calibrate, fusion_fitted, index_fingerprint, readers_for, report_table
    from service.ask import Answerer
    from service.ask.reader import META as READER_META
    from service.ask.reader import ReaderError, load_reader
    from service.config import Settings

    datasets = parse_sets(f"report:{args.split}" if args.split else args.sets, args.external_dir)
    kept = refused_sets(datasets, HELD_OUT)
    if kept:
        print(f"error: calibrate on tuning sets (default report dev, report-external and eval/sets.py "
              f"CALIBRATION_HELPER_SETS), never on a reported one (test, fresh, keywords, the held-out helper sets) "
              f"({', '.join(kept)})", file=sys.stderr)
        return 2
    try:
        reader = load_reader(args.reader or Settings().reader)
        fold_dirs = args.fold_reader or sorted(p.parent for p in FOLD_READERS.glob(f"*/{READER_META}"))
        folds = [load_reader(Path(d)) for d in fold_dirs]
        readers = readers_for(datasets, reader, folds)
    except (ReaderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.alpha, args.fusion, args.url = None, None, None
    target = _targets(args, datasets[0], ["hybrid"])["hybrid"]
    answerer = Answerer(target.retriever, None, reader)  # its own, uncalibrated: analysis only
    fitted_for = {**index_fingerprint(target.retriever.index.manifest), "reader": reader.fingerprint,
                  "query_adapter": getattr(target.retriever.embedder, "query_adapter", None),
                  "fusion": fusion_fitted(target.retriever.fusion)}
    out = calibrate(datasets, answerer, fitted_for, progress=not args.no_progress,
                    max_false=args.max_false_abstention, readers=readers)
    path = args.write or Settings().calibration or target.index_dir / "calibration.json"
    cal = out["calibration"]
    cal.save(path)
    print(report_table(out["report"]))
    print(json.dumps({"written": str(path), "threshold": cal.threshold, "l2": out["report"]["l2"],
                      "sentence_weights": cal.sentence_weights,
                      "fitted_on": [f"{d['dataset']}/{d['split']} ({d['questions']})" for d in cal.fitted_on]},
                     indent=1))
    return 0


def cmd_reproduce(args) -> int:
    from eval.reproduce import bm25_protocol, mteb_dense_protocol
    from indexer.embed import SentenceTransformerEmbedder

    dataset = load_dataset(args.dataset, args.split)
    if dataset.corpus_file is None:
        print("error: reproduce takes a BEIR directory", file=sys.stderr)
        return 2
    rows = [("BM25, bm25s k1=0.9 b=0.4, stemmed, whole documents", bm25_protocol(dataset))]
    rows.append(("all-MiniLM-L6-v2 dense, title + text truncated at 256 (MTEB)",
                 mteb_dense_protocol(dataset, SentenceTransformerEmbedder(threads=args.threads), args.cache)))
    print(f"| protocol ({dataset.name}/{dataset.split}, {len(dataset.queries)} queries) | ndcg@10 | recall@100 |")
    print("|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['ndcg@10']:.3f} | {m['recall@100']:.3f} |")
    return 0


def cmd_bench(args) -> int:
    from eval.bench import bench

    print(bench(args.corpus, repeats=args.repeats, url=args.url))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval", description="Evaluate reportqa retrieval and answers.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--dataset", default="report",
                        help="'report', 'report-external', a directory in report-external's layout "
                             "(eval/datasets/helpers-a) or a BEIR directory (default: report)")
        sp.add_argument("--split", default=None, help="report: dev|test|fresh (default test); report-external: "
                        "all|answerable|unanswerable|keywords (default all); BEIR: a qrels split (default test)")
        sp.add_argument("--external-dir", type=Path, default=None,
                        help="where report-external is (default ../shared/datasets/report-external)")
        sp.add_argument("--calibration", type=Path, default=None,
                        help="/v1/ask calibration file (default: as the service finds it)")
        sp.add_argument("--k", type=int, default=10, help="passages per query that count (default 10)")
        sp.add_argument("--index", type=Path, default=Path("index"), help="index directory for the report set")
        sp.add_argument("--corpus", type=Path, default=Path("corpus"), help="corpus, if the index must be built")
        sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where built eval indexes are kept")
        sp.add_argument("--target-tokens", type=int, default=None, help="build with this chunk size instead")
        sp.add_argument("--threads", type=int, default=None)
        sp.add_argument("--query-adapter", default=None,
                        help="encode questions with this query adapter: packaged, a directory, or none (default: "
                             "packaged for the report's question sets, none for a BEIR corpus)")
        sp.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("run", help="evaluate modes and write "
                                   "eval/reports/<dataset>-<split>-<date>[-http].{json,md,png}")
    common(r)
    r.add_argument("--modes", default="naive,lexical,dense,hybrid,ask",
                   help=f"comma list from {', '.join(ALL_MODES)} (naive: paragraph chunks, dense, no headings)")
    r.add_argument("--url", default=None, help="evaluate a running service through its public API instead")
    r.add_argument("--alpha", type=float, default=None, help="hybrid: weight of the dense score")
    r.add_argument("--fusion", choices=["minmax", "rrf"], default=None)
    r.add_argument("--sentence-weight", type=float, default=None,
                   help="dense: weight of the best sentence against the whole chunk (0 = chunk only)")
    r.add_argument("--out", type=Path, default=Path("eval/reports"))
    r.add_argument("--limit", type=int, default=None, help="only the first N queries")
    r.add_argument("--no-plot", action="store_true")
    r.add_argument("--no-report", action="store_true", help="print the table only")
    r.add_argument("--show-misses", action="store_true", help="list queries whose answer is not first")
    t = sub.add_parser("tune", help="grid-search hybrid fusion on a tuning split (dev, or BEIR train)")
    common(t)
    t.add_argument("--metric", default="mrr@10")
    c = sub.add_parser("calibrate", help="fit /v1/ask's answer weights and abstention on tuning question sets")
    common(c)
    c.add_argument("--sets", default=CALIBRATION_SETS,
                   help="comma list of dataset:split to fit on (default: report:dev, report-external:all and the "
                        "helper sets of eval/sets.py CALIBRATION_HELPER_SETS); --split X is short for --sets report:X")
    c.add_argument("--max-false-abstention", type=float, default=MAX_FALSE_ABSTENTION,
                   help="most of each set's answerable questions the threshold may refuse (default 0.04)")
    c.add_argument("--reader", type=Path, default=None,
                   help="the reader to fit with (default REPORTQA_READER, else the one shipped in service/ask/reader)")
    c.add_argument("--fold-reader", action="append", default=[], metavar="DIR",
                   help="a reader trained without one of the sets (repeatable): that set's questions are scored by "
                        "it when the served reader was trained on them (cross-fitting; see `make reader`); "
                        "default: every reader under eval/readers/")
    c.add_argument("--write", type=Path, default=None,
                   help="where to write (default REPORTQA_CALIBRATION, else <index>/calibration.json)")
    rd = sub.add_parser("reader", help="fit a cross-encoder reader on some question sets and score others "
                                       "(--save: the adapters /v1/ask uses)")
    common(rd)
    rd.add_argument("--train", default="report:dev,"
                    + ",".join(helper_spec(READER_HELPER_SETS)),
                    help="comma list of dataset[:split] to fit on")
    rd.add_argument("--score", default="report-external:all,report:test,report:fresh",
                    help="comma list of dataset[:split] to score")
    rd.add_argument("--epochs", type=int, default=5)
    rd.add_argument("--lr", type=float, default=5e-5, help="learning rate of the encoder (or of the adapters)")
    rd.add_argument("--neg-per-pos", type=float, default=4.0)
    rd.add_argument("--lora", type=int, default=None, help="train rank-r adapters instead of every weight")
    rd.add_argument("--compress-rank", type=int, default=None,
                    help="without --lora: store the fine-tuned weights' change at this rank (SVD) for --save")
    rd.add_argument("--layers", type=int, default=None,
                    help="a reader of the base model's first N layers only (default: all six)")
    rd.add_argument("--seed", type=int, default=0)
    rd.add_argument("--limit", type=int, default=None, help="fit on the first N questions only (a quick check)")
    rd.add_argument("--save", type=Path, default=None,
                    help="write the adapters and reader.json here (with --lora; the service's: service/ask/reader)")
    qa = sub.add_parser("query-adapter", help="fit the query adapter (questions only) on some question sets and "
                                              "score others (--save: the one the service uses)")
    common(qa)
    qa.add_argument("--train", default=",".join(helper_spec(HELPER_SETS)),
                    help="comma list of dataset[:split] to fit on (never the tuning or reported sets)")
    qa.add_argument("--score", default="report:dev,report-external:all,report:test,report:fresh",
                    help="comma list of dataset[:split] to score")
    qa.add_argument("--epochs", type=int, default=5)
    qa.add_argument("--null-weight", type=float, default=3.0,
                    help="weight of the unanswerable questions' 'no answer' target (0: no such class; they are "
                         "then not used)")
    qa.add_argument("--lr", type=float, default=2e-5)
    qa.add_argument("--scale", type=float, default=20.0, help="cosines are multiplied by this in the softmax")
    qa.add_argument("--rank", type=int, default=88, help="rank of the change as saved (88 in int8: under 4 MB)")
    qa.add_argument("--storage", choices=STORAGES, default="int8",
                    help="int8 with a scale per rank component (half of fp16's size, the same figures), or fp16")
    qa.add_argument("--drop-similar", type=float, default=None, metavar="JACCARD",
                    help="leakage control: leave out training questions whose word set has at least this Jaccard "
                         "similarity with a tuning or reported set's question (e.g. 0.5)")
    qa.add_argument("--drop-at-random", action="store_true",
                    help="with --drop-similar: leave out as many training questions, chosen at random (the control's "
                         "control: what the smaller training set alone costs)")
    qa.add_argument("--seed", type=int, default=0)
    qa.add_argument("--save", type=Path, default=None,
                    help="write the adapter and query_adapter.json here (the service's: indexer/query_adapter)")
    rp = sub.add_parser("reproduce", help="published BM25 and MTEB dense protocols on a BEIR data set")
    common(rp)
    b = sub.add_parser("bench", help="index build seconds, search/ask latency percentiles, memory")
    b.add_argument("--corpus", type=Path, default=Path("corpus"))
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--url", default=None, help="also time a running service end to end")
    return p


def _portable(path: str) -> str:
    """A path as a report may keep it: the packaged calibration by its place in the package, a file under the
    working directory relative to it, anything else by its name only (no machine paths in committed reports)."""
    from service.ask.calibration import PACKAGED

    p = Path(path).resolve()
    if p == PACKAGED.resolve():
        return "service/ask/calibration.json (packaged)"
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"run": cmd_run, "tune": cmd_tune, "calibrate": cmd_calibrate, "bench": cmd_bench,
                "reproduce": cmd_reproduce, "reader": cmd_reader,
                "query-adapter": cmd_query_adapter}[args.command](args)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
