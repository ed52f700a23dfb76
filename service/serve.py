"""Serve the app with one or more worker processes: `python -m service [--fake-embedder]` (or `service.serve`).

Reads `HOST` (default 127.0.0.1), `PORT` (default 8000) and `REPORTQA_WORKERS` (default 1) from the
environment; every other setting comes from `service.config.Settings` (prefix `REPORTQA_`) as usual.

- One worker: the app runs in this process, loads the model and index on a worker thread (so `/healthz` and
  `/readyz` answer during the load) and reloads on SIGHUP or `POST /v1/admin/reload`.
- N workers: uvicorn's supervisor forks N processes sharing the listening socket. Each worker loads the model
  and the index *before* it accepts connections (its lifespan waits for the load), so a worker that is still
  loading is never handed a request by the shared socket. `POST /v1/admin/reload` reaches one worker only;
  to serve a new `CURRENT` on every worker send SIGHUP to this (the supervisor) process: uvicorn replaces the
  workers one at a time, bringing each replacement up — loaded — before it stops the old one.

`--fake-embedder` serves with the deterministic hashing embedder (`indexer.embed.FakeEmbedder`) instead of
the real model; it is for tests and the failover drill, whose index is built with `--fake-embedder`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from fastapi import FastAPI

WORKERS_ENV = "REPORTQA_WORKERS"
# seconds a new worker may take to load model and index before uvicorn's supervisor gives up on it
WORKER_STARTUP_TIMEOUT = 300


def workers_from_env(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(WORKERS_ENV, "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        raise SystemExit(f"error: {WORKERS_ENV}={raw!r} is not a whole number of worker processes") from None
    if not 1 <= n <= 64:
        raise SystemExit(f"error: {WORKERS_ENV}={n} is outside 1..64")
    return n


def _background_load() -> bool:
    # several workers share one socket: a worker must not accept before it can serve
    return workers_from_env() == 1


def app_factory() -> FastAPI:
    """uvicorn factory (`--factory service.serve:app_factory`): the app with settings from the environment."""
    from service.main import create_app

    return create_app(background_load=_background_load())


def fake_app_factory() -> FastAPI:
    """The same with the deterministic fake embedder (tests, `deploy/failover_test.py`)."""
    from indexer.embed import FakeEmbedder
    from service.main import create_app

    return create_app(embedder=FakeEmbedder(), background_load=_background_load())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n\n")[0])
    p.add_argument("--fake-embedder", action="store_true", help="serve with the fake hashing embedder (tests)")
    args = p.parse_args(argv)
    workers = workers_from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from service.config import Settings
    from service.server import serve, serve_workers

    settings = Settings()
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    if workers == 1:  # the app in this process (background load, SIGHUP and /v1/admin/reload reload it)
        app = fake_app_factory() if args.fake_embedder else app_factory()
        return serve(app, settings, host, port)
    factory = "service.serve:fake_app_factory" if args.fake_embedder else "service.serve:app_factory"
    return serve_workers(factory, settings, host, port, workers, startup_timeout_s=WORKER_STARTUP_TIMEOUT)


if __name__ == "__main__":
    sys.exit(main())
