"""The CLI's Qdrant options: `build|ensure|rollback --backend qdrant` and `qdrant-publish` (thin wrappers over
indexer.qdrant_store; errors become messages and exit codes). Defaults come from the service's variables
(REPORTQA_BACKEND, REPORTQA_QDRANT_URL, REPORTQA_QDRANT_PATH, REPORTQA_QDRANT_ALIAS) so that one environment
configures the indexer job and the API replicas alike."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_INDEX = 5


def add_backend_args(p: argparse.ArgumentParser, publish_only: bool = False) -> None:
    from indexer.qdrant_store import BM25_IDF_MODES, DEFAULT_ALIAS

    env = os.environ
    if not publish_only:
        p.add_argument("--backend", choices=("faiss", "qdrant"), default=env.get("REPORTQA_BACKEND", "faiss"),
                       help="faiss: the index directory only (default); qdrant: also write the version as a Qdrant "
                            "collection and switch the alias to it (with CURRENT)")
    p.add_argument("--qdrant-url", default=env.get("REPORTQA_QDRANT_URL") or None, help="Qdrant server URL")
    p.add_argument("--qdrant-path", type=Path, default=env.get("REPORTQA_QDRANT_PATH") or None,
                   help="qdrant-client local mode on disk (when no URL is given)")
    p.add_argument("--qdrant-alias", default=env.get("REPORTQA_QDRANT_ALIAS", DEFAULT_ALIAS),
                   help=f"the alias the service reads (default: {DEFAULT_ALIAS})")
    p.add_argument("--bm25-idf", choices=BM25_IDF_MODES, default="global",
                   help="global: idf multiplied into the stored values, exact on any number of shards (default); "
                        "modifier: Qdrant's Modifier.IDF, exact on one shard only")
    p.add_argument("--qdrant-wait", type=float, default=float(env.get("REPORTQA_QDRANT_WAIT") or 0),
                   help="seconds to wait for the Qdrant server to answer (a compose job starting beside it)")
    p.add_argument("--shards", type=int, default=None, help="shards of a new collection (server only)")
    p.add_argument("--replicas", type=int, default=None, help="replication factor of a new collection (server only)")


def connect(args: argparse.Namespace):
    """A client that answers (waiting up to --qdrant-wait seconds), or None after printing why not."""
    from indexer.qdrant_store import make_client

    if not args.qdrant_url and not args.qdrant_path:
        print("error: --backend qdrant needs --qdrant-url or --qdrant-path (or REPORTQA_QDRANT_URL / "
              "REPORTQA_QDRANT_PATH)", file=sys.stderr)
        return None
    deadline = time.monotonic() + max(0.0, args.qdrant_wait)
    while True:
        try:
            client = make_client(args.qdrant_url, args.qdrant_path,
                                 os.environ.get("REPORTQA_QDRANT_API_KEY") or None)
            client.get_collections()  # a server that answers
            return client
        except Exception as e:  # the server unreachable, local storage locked by another process
            if time.monotonic() >= deadline:
                print(f"error: cannot open Qdrant ({args.qdrant_url or args.qdrant_path}): {type(e).__name__}: {e}",
                      file=sys.stderr)
                return None
            time.sleep(2)


def _publish(args: argparse.Namespace, client, index, activate: bool, keep: int, prune: bool = True) -> int:
    from indexer.qdrant_store import QdrantBackendError, publish

    try:
        r = publish(client, index, alias=args.qdrant_alias, activate=activate, keep=keep, mode=args.bm25_idf,
                    shards=args.shards, replicas=args.replicas, prune=prune)
    except (QdrantBackendError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INDEX
    except Exception as e:  # network, server-side refusals
        print(f"error: Qdrant refused the collection: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INDEX
    print(f"qdrant     collection {r.collection} ({r.points} points{', reused' if r.reused else ', written'}); "
          f"alias {r.alias} {'switched to it' if r.switched else 'not switched'}"
          f"{'; pruned ' + ', '.join(r.pruned) if r.pruned else ''} ({r.seconds:.1f} s)")
    return 0


def publish_version(args: argparse.Namespace, out: Path, version: str | None, activate: bool, keep: int) -> int:
    """Write the version `version` of the index root `out` (default: the one CURRENT names) to Qdrant and
    (when `activate`) point the alias at it; a complete collection of that version is reused."""
    from indexer.store import IndexLoadError, load_index, version_dir

    try:
        index = load_index(version_dir(out, version) if version else out)
    except IndexLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INDEX
    client = connect(args)
    if client is None:
        return EXIT_INDEX
    try:
        return _publish(args, client, index, activate, keep)
    finally:
        client.close()


def rollback(args: argparse.Namespace) -> int:
    """`rollback --backend qdrant`: CURRENT moves as with FAISS (the target loaded and checked first), then
    the alias moves to the collection of that version in one request (written first if it was pruned; nothing
    is pruned). Qdrant is opened before CURRENT moves; if the alias cannot follow, CURRENT is put back, so
    the two never name different versions after a failed rollback."""
    from indexer.store import IndexLoadError, load_index, root_lock, set_current, version_dir
    from indexer.store import rollback as rollback_current

    client = connect(args)
    if client is None:
        return EXIT_INDEX
    try:
        try:
            previous, new = rollback_current(args.out, args.to)
        except IndexLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_INDEX
        try:
            code = _publish(args, client, load_index(version_dir(args.out, new)), True, 1, prune=False)
        except IndexLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            code = EXIT_INDEX
        if code != 0:
            if previous is not None:
                with root_lock(args.out):
                    set_current(args.out, previous)
            print(f"error: the alias {args.qdrant_alias} did not move; "
                  + (f"CURRENT put back to {previous}" if previous else f"CURRENT names {new}"), file=sys.stderr)
            return code
        print(f"CURRENT: {previous} -> {new}; alias {args.qdrant_alias} -> its collection  (a running service "
              "serves it after POST /v1/admin/reload or SIGHUP)")
        return 0
    finally:
        client.close()
