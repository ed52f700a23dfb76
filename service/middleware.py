"""Pure ASGI middleware at the edge: body size and time limits, Host check, security headers.

Bodies: a Content-Length over the limit is refused (413) before a byte of the body is read; a body without
one (chunked) is counted while it streams and reading stops at the limit; the whole body must arrive within
`body_timeout_s` of the first read (408), so a client trickling bytes cannot hold a connection and a task.
Both answers close the connection (the rest of the body is never read).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body
from service.limits import Overloaded
from service.metrics import Metrics

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes; send less "
                         "(REPORTQA_MAX_BODY_BYTES sets the limit)", headers={"Connection": "close"})


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s", headers={"Connection": "close"})


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, metrics: Metrics | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s, self.metrics = app, max_bytes, timeout_s, metrics

    def _count(self, reason: str) -> None:
        if self.metrics:
            self.metrics.refused(reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            self._count("body_too_large")
            exc = BodyTooLarge(self.max_bytes)
            await send_json(send, exc.status_code, error_body(exc.detail), exc.headers)
            return

        loop = asyncio.get_running_loop()
        state = {"received": 0, "done": False, "deadline": None, "started": False}

        async def limited_receive() -> Message:
            if state["done"]:
                return await receive()  # after the body: disconnect notices, no deadline
            if state["deadline"] is None:
                state["deadline"] = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, state["deadline"] - loop.time()))
            except TimeoutError:
                self._count("body_timeout")
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    self._count("body_too_large")
                    raise BodyTooLarge(self.max_bytes)
                if not message.get("more_body", False):
                    state["done"] = True
            else:
                state["done"] = True
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # raised where no handler turned it into a response
            if state["started"]:
                raise
            await send_json(send, exc.status_code, error_body(exc.detail), exc.headers)


class AdmissionMiddleware:
    """Refuse a search/ask request with 503 at once when the limiter is saturated, before its body is read,
    parsed and validated: under overload a refusal costs next to nothing (the route still takes a slot)."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            limiter = getattr(scope["app"].state, "limiter", None)
            if limiter is not None:
                try:
                    limiter.check_admission()
                except Overloaded as exc:
                    await send_json(send, 503, error_body(str(exc)), {"Retry-After": str(exc.retry_after)})
                    return
        await self.app(scope, receive, send)


class HostCheckMiddleware:
    """Refuse (400) a Host header that is not in `allowed` (`*.example.org` matches subdomains); `*` allows all."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = [h.lower() for h in allowed]

    def _ok(self, host: str) -> bool:
        for pattern in self.allowed:
            if pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        raw = (_header(scope, b"host") or b"").decode("latin-1").lower()
        host = raw.rsplit(":", 1)[0] if not raw.endswith("]") else raw
        if not self._ok(host):
            await send_json(send, 400, error_body("this Host is not served here (REPORTQA_ALLOWED_HOSTS)"))
            return
        await self.app(scope, receive, send)


# The search page loads only its own script and stylesheet: nothing inline, nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def docs_csp(html: bytes) -> str:
    """CSP for the Swagger UI / ReDoc pages: local scripts plus the page's own inline start-up script (by its
    hash); inline styles, data: images and blob: workers, which those bundles use."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
                      for m in _INLINE_SCRIPT.findall(html))
    return (f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class SecurityHeadersMiddleware:
    """nosniff, Referrer-Policy and no framing on every response; the page's CSP unless a route set its own."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"x-frame-options", b"DENY")]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, _send)
