"""The web console and the API docs on the API's own origin: ``mount_console(app)`` serves the
package folder ``serving/console/`` at ``/ui/``, Swagger UI at ``/docs`` and Redoc at ``/redoc``
from the vendored files under ``console/vendor/`` (no CDN: an air-gapped or proxied network is the
usual place for this service), and adds security headers to all of these responses.

The pages hold no inline script: every script is a file of this origin, so the Content-Security-
Policy can refuse inline and foreign scripts outright (an injected ``<script>`` never runs). The
pages are public (guards.py); the console's scripts send the API key on API calls only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from rayfolio.serving.guards import Receive, Scope, Send

CONSOLE = Path(__file__).resolve().parent / "console"
APIDOCS = CONSOLE / "apidocs"  # the /docs and /redoc pages and Swagger UI's initialiser

# One policy for every page (Swagger UI and the console run under it with no violation), except that
# Redoc (styled-components) writes <style> elements at run time and starts its search worker from a
# blob: URL: without these two its page stays blank or logs a violation, so they go to /redoc alone.
CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
REDOC_CSP = {**CSP, "style-src": "'self' 'unsafe-inline'", "worker-src": "blob:"}


def policy(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def _headers(csp: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(b"content-security-policy", policy(csp).encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer")]  # fmt: skip


class SecurityHeaders:
    """Pure ASGI (no per-request task group, unlike ``BaseHTTPMiddleware``; guards.py says why): the
    headers above on the console's and the docs' responses; the JSON API's responses pass untouched."""

    def __init__(self, app) -> None:
        self.app = app
        self.page, self.redoc = _headers(CSP), _headers(REDOC_CSP)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = None if scope["type"] != "http" else self._for(scope["path"].removeprefix(scope.get("root_path", "")))
        if extra is None:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _for(self, path: str) -> list[tuple[bytes, bytes]] | None:
        if path == "/redoc":
            return self.redoc
        if path in ("/ui", "/docs") or path.startswith(("/ui/", "/docs/")):
            return self.page
        return None


def mount_console(app: FastAPI) -> None:
    """``/ui/`` (``/ui`` redirects there), ``/docs`` and ``/redoc`` on ``app``, with their headers.
    ``app`` must be built with ``docs_url=None, redoc_url=None`` (FastAPI's pages load a CDN)."""
    # The pages name every URL relative to themselves (ui/vendor/..., openapi.json), so they work
    # under a route prefix too. Read once: they are part of the installed package.
    swagger, redoc = (HTMLResponse((APIDOCS / name).read_text()) for name in ("swagger.html", "redoc.html"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return swagger

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return redoc

    app.mount("/ui", StaticFiles(directory=CONSOLE, html=True), name="console")
    app.add_middleware(SecurityHeaders)
