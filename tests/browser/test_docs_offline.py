"""The API docs work offline: /docs (Swagger UI) and /redoc render the operations from vendored
files with every request off 127.0.0.1 blocked, under the Content-Security-Policy, with no
console error (the page fixture fails a test on any); the security headers are on the pages."""

from __future__ import annotations

import re

import httpx


def test_swagger_ui_lists_the_operations_offline(console, page):
    page.goto(page.path("/docs"))
    page.get_by_text("/v1/recommendations", exact=True).first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() >= 10  # every operation's block, rendered by the vendored script
    page.shot("docs")
    assert page.blocked == []


def test_redoc_renders_the_operations_offline(console, page):
    page.goto(page.path("/redoc"))
    page.get_by_text("/v1/recommendations", exact=True).first.wait_for(timeout=30_000)
    page.get_by_role("heading", name="rayfolio").first.wait_for()
    page.shot("redoc")
    assert page.blocked == []


def _directives(csp: str) -> dict[str, set[str]]:
    return {d.split()[0]: set(d.split()[1:]) for d in (p.strip() for p in csp.split(";")) if d}


def test_the_pages_carry_the_security_headers_and_need_no_key(console):
    for path in ("/ui/", "/docs", "/redoc", "/ui/vendor/README.txt"):
        r = httpx.get(console.url + path)  # no Authorization header: the pages are public
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        csp = _directives(r.headers["content-security-policy"])
        assert csp["script-src"] == {"'self'"} and csp["default-src"] == {"'self'"}, (path, csp)
        assert csp["frame-ancestors"] == {"'none'"} and csp["connect-src"] == {"'self'"}, (path, csp)
        assert csp["img-src"] == {"'self'", "data:"}
        # Only Redoc gets inline styles (styled-components) and a blob: worker (its search).
        assert csp["style-src"] == ({"'self'", "'unsafe-inline'"} if path == "/redoc" else {"'self'"}), (path, csp)
        assert csp.get("worker-src") == ({"blob:"} if path == "/redoc" else None), (path, csp)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    for page in ("/docs", "/redoc"):  # every script a file of this origin: nothing inline, nothing foreign
        html = httpx.get(console.url + page).text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], page
        assert all("//" not in url for url in re.findall(r'(?:src|href)="([^"]*)"', html)), page
    api = httpx.get(console.url + "/v1/models")
    assert api.status_code == 401 and "content-security-policy" not in api.headers  # the API itself: untouched
