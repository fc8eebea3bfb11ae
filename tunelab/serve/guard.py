"""The door of the server: API key, body size, concurrent requests, metrics, and the last
line against a crash. A pure ASGI middleware, so it refuses a request before FastAPI reads
it, and an unexpected exception in a route becomes a 500 error object instead of a dead
connection (with the traceback in the log)."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunelab.serve.metrics import Metrics
from tunelab.serve.wire import error_body

log = logging.getLogger("tunelab.serve")

OPEN_PATHS = ("/health",)  # answered without a key (load balancers, container probes)
ADMIN_PREFIX = "/v1/adapters"  # these check the admin key themselves (app.py)
# requests that take a slot: generation and encoder work, not listing models or metrics
WORK_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/classify",
              "/v1/ner")


@dataclass
class Limits:
    """--max-concurrent and --max-body-bytes."""

    max_concurrent: int = 64
    max_body_bytes: int = 1 << 20


def bearer_matches(headers: Headers, key: str) -> bool:
    """`Authorization: Bearer KEY`, compared in constant time."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def refusal(status: int, message: str, type: str, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(message, type, None, code), status_code=status, headers=headers)


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/adapters/{name}`), so metrics stay a bounded set."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class Guard:
    def __init__(self, app: ASGIApp, api_key: str | None, limits: Limits, metrics: Metrics) -> None:
        self.app, self.api_key, self.limits, self.metrics = app, api_key, limits, metrics
        self.active = 0  # requests holding a work slot; the event loop is one thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self._guarded(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not status[0]:  # nothing sent yet: the client gets a proper 500
                await refusal(500, "internal server error; the server log has the traceback",
                              "server_error")(scope, receive, tracked)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            self.metrics.observe(route_label(scope), status[0] or 500, seconds)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, headers = scope["path"], Headers(scope=scope)
        checks_key = path not in OPEN_PATHS and not path.startswith(ADMIN_PREFIX)
        if self.api_key is not None and checks_key and not bearer_matches(headers, self.api_key):
            await refusal(401, "missing or wrong API key; send the header 'Authorization: Bearer "
                          "KEY' with the server's --api-key", "invalid_request_error",
                          "invalid_api_key")(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        too_big = refusal(413, f"the request body is over {limit} bytes (--max-body-bytes); "
                          "send less", "invalid_request_error", "body_too_large")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_big(scope, receive, send)
            return
        work = path in WORK_PATHS
        if work and self.active >= self.limits.max_concurrent:
            await refusal(429, f"{self.active} requests are running, the server's limit "
                          "(--max-concurrent); retry later", "rate_limit_error",
                          "too_many_requests")(scope, receive, send)
            return
        self.active += work
        try:
            body = await read_body(receive, limit)
            if body is None:
                await too_big(scope, receive, send)
                return
            await self.app(scope, replay(body, receive), send)
        finally:
            self.active -= work


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` (chunked uploads carry no length)."""
    parts, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client left; the app sees the disconnect on its next receive
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        more = message.get("more_body", False)
    return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A receive that hands the app the body already read, then the real channel (so
    `request.is_disconnected()` still sees a client that went away)."""
    pending = [body]

    async def receive_again() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return receive_again
