"""What every request meets before its route, as one pure ASGI middleware, in this order:
admission (past ``max_in_flight`` requests at once: 503 + Retry-After), the API key (401 before
anything is read or validated), the body size (413). Each answer is the one JSON error model.

One plain ASGI callable rather than three ``@app.middleware("http")`` functions: Starlette's
``BaseHTTPMiddleware`` gives each request, per middleware, a task group, a memory stream and a
wrapped ``receive``; under load (bench/serve_load.py, py-spy on the ingress replica) those cost
about a tenth of the replica's event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from rayfolio.serving.auth import ApiKey, find_key
from rayfolio.serving.schemas import ErrorBody, ErrorResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Routes anyone may call; every other path needs a known key, checked before anything else.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/ui"})
# The console's static files and the vendored docs assets (serving/console.py): its scripts send the key on API calls.
PUBLIC_PREFIX = "/ui/"
ANONYMOUS_ADMIN = ApiKey("insecure-dev-anonymous", "admin")


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


class Admission:
    """At most ``limit`` requests in this replica at once; past that, shed at once (cheaper for
    everyone than a queue that times out)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_flight = limit, 0

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


class Guards:
    """``app.add_middleware(Guards, keys=..., max_in_flight=..., max_body_bytes=..., retry_after_s=...,
    insecure_dev=...)``. The key found is left in ``request.state.api_key`` for the routes."""

    def __init__(self, app, *, keys: tuple[ApiKey, ...], max_in_flight: int, max_body_bytes: int,
                 retry_after_s: float, insecure_dev: bool) -> None:  # fmt: skip
        self.app, self.keys, self.limit, self.insecure_dev = app, keys, max_body_bytes, insecure_dev
        self.admission = Admission(max_in_flight)
        self.retry_after = {"Retry-After": str(max(1, round(retry_after_s)))}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.admission.enter():
            limit = self.admission.limit
            await error(503, "overloaded", f"over {limit} requests in progress here; retry later",
                        self.retry_after)(scope, receive, send)  # fmt: skip
            return
        try:
            refused, receive = await self._check(scope, receive)
            await (refused or self.app)(scope, receive, send)
        finally:
            self.admission.leave()

    async def _check(self, scope: Scope, receive: Receive) -> tuple[JSONResponse | None, Receive]:
        """(the error answer or None, the ``receive`` the app reads the body from)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIX):
            key = self._find(headers.get("authorization", ""))
            if key is None:
                return error(401, "unauthorized", "missing or unknown API key", {"WWW-Authenticate": "Bearer"}), receive
            scope.setdefault("state", {})["api_key"] = key
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return error(413, "too_large", f"request body over {self.limit} bytes"), receive
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # Chunked: read it once, bounded, and hand the app the same messages.
            messages, size = [], 0
            while True:
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                if size > self.limit:
                    return error(413, "too_large", f"request body over {self.limit} bytes"), receive
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            return None, _replay(messages, receive)
        return None, receive

    def _find(self, authorization: str) -> ApiKey | None:
        if self.insecure_dev and not self.keys:
            return ANONYMOUS_ADMIN
        scheme, _, presented = authorization.partition(" ")
        return find_key(self.keys, presented.strip()) if scheme.lower() == "bearer" else None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then whatever comes next (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
