"""Running the app under uvicorn with the limits an exposed server needs.

- a deadline for request headers (uvicorn has none: a client sending a header line now and then would hold
  its connection for ever): a connection must complete a request's headers within `headers_timeout_s` of
  opening or of its previous response, else it is closed;
- idle keep-alive connections closed after `keep_alive_s`; request bodies bounded in size and time by
  service.middleware.BodyLimitMiddleware;
- a cap on open connections (`max_connections`: requests beyond it get uvicorn's 503), h11's header size limit;
- SIGTERM/SIGINT: stop accepting, let in-flight requests finish (at most `graceful_shutdown_s`), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import tempfile
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import Settings

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 16 * 1024  # h11: the most bytes of a request line and headers
GIL_SWITCH_INTERVAL_S = 0.001


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on the connection. asyncio sets it only on sockets whose `proto` is IPPROTO_TCP, and the
    listening socket a worker process inherits from uvicorn's supervisor reports proto 0, so without this every
    response of a worker waited for the client's delayed ACK (~40 ms: measured 50 ms p50 per request)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CoalescingTransport:
    """A transport whose writes made in one event-loop iteration leave in one `send`: uvicorn writes a
    response's headers and its body separately, and with TCP_NODELAY they left as two segments, so a replica
    killed between them (or before the balancer read the second) left the client with headers and no body, a
    failure no balancer can retry (the failover drill saw it about once in ten runs). One segment: the balancer
    gets the whole response or nothing, and nothing it retries. Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


@functools.cache
def _headers_timeout_from_env() -> float:
    return Settings().headers_timeout_s  # worker processes (spawned) read their settings from the environment


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (`headers_timeout_s`; None: the
    REPORTQA_HEADERS_TIMEOUT_S setting, which is what worker processes started by uvicorn's supervisor use,
    since they get the protocol by its import path)."""

    headers_timeout_s: float | None = None
    _headers_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        timeout = self.headers_timeout_s or _headers_timeout_from_env()
        self._headers_timer = self.loop.call_later(timeout, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _idle(self) -> bool:
        """No request is being served: waiting for (the rest of) the next request's headers."""
        return self.cycle is None or self.cycle.response_complete

    def _headers_timed_out(self) -> None:
        self._headers_timer = None
        if self._idle() and not self.transport.is_closing():
            log.debug("closing %s: request headers not complete in time", self.client)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._idle():
            self._disarm()  # the headers are in: the request is being served

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._idle():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_class(headers_timeout_s: float) -> type[H11Protocol]:
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"headers_timeout_s": headers_timeout_s})


def uvicorn_config(app: FastAPI | str, settings: Settings, host: str, port: int, workers: int = 1) -> uvicorn.Config:
    """The server's limits. `app` is the app, or with several workers the import path of an app factory
    (each worker process builds its own app from the environment)."""
    multi = workers > 1
    return uvicorn.Config(
        app, host=host, port=port, log_level="info", factory=multi, workers=workers,
        http="service.server:HeaderDeadlineProtocol" if multi else protocol_class(settings.headers_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works (loop.call_later)
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        server_header=False,
    )


def serve_workers(factory: str, settings: Settings, host: str, port: int, workers: int,
                  startup_timeout_s: float = 300.0) -> int:
    """Serve with `workers` processes sharing one listening socket (uvicorn's supervisor): each builds its app
    with `factory` and loads model and index before it accepts. Metrics add up across processes through
    PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory unless one is given). SIGTERM: the supervisor stops
    the workers, each finishing its requests; SIGHUP: workers are replaced one at a time (a rolling reload)."""
    from uvicorn.supervisors import Multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="reportqa-metrics-")
    config = uvicorn_config(factory, settings, host, port, workers)
    config.timeout_worker_healthcheck = int(startup_timeout_s)  # a new worker may take this long to load
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
    return 0


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a graceful shutdown."""
    server = uvicorn.Server(uvicorn_config(app, settings, host, port))

    def _signal(sig: int, _: FrameType | None) -> None:
        # uvicorn handles the signals while it serves and raises them again once it has shut down gracefully:
        # that second delivery lands here and is the normal end (exit 0). Before uvicorn runs, exit at once.
        if not server.should_exit:
            raise SystemExit(128 + sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _signal)
    # The event loop (HTTP parsing, refusals, /healthz) shares the GIL with the search threads; a shorter switch
    # interval than the default 5 ms lets it in sooner, which bounds refusal and health-check latency under load.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    server.run()
    return 0 if server.started else 1
