"""The console's browser tests: a real Serve app with a tiny run behind it, driven by Playwright in
Debian's headless Chromium (no browser download). The whole directory is skipped, with the reason,
where Chromium or Playwright is missing (.ci/run installs Chromium).

``page`` is one fresh browser context per test at 1280x800 in which every request to anything but
127.0.0.1 is blocked and recorded (the console must work offline), and whose console errors and
uncaught page errors fail the test at teardown (a CSP violation is such an error). It answers what
Playwright's ``Page`` answers, plus ``shot(name)``, ``path(p)``, ``blocked``, ``errors`` and
``allow_console(pattern)``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("no Chromium (/usr/bin/chromium or `chromium` on PATH): apt-get install chromium",
                allow_module_level=True)  # fmt: skip
if importlib.util.find_spec("playwright") is None:
    pytest.skip("no Playwright for Python: pip install -e '.[dev]'", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from bench.tiny_market import ADMIN, USER, serve_tiny, tiny_settings  # noqa: E402
from bench.tiny_report import write_tiny_run  # noqa: E402
from rayfolio.serving.settings import ServeSettings  # noqa: E402

VIEWPORT = {"width": 1280, "height": 800}
LOCAL = "127.0.0.1"


@dataclass(frozen=True)
class Console:
    """The served console: its base URL (no trailing slash), the keys, the settings and a client."""

    url: str
    user_key: str
    admin_key: str
    settings: ServeSettings
    client: httpx.Client


@pytest.fixture(scope="package")
def console(ray_session, tmp_path_factory) -> Iterator[Console]:
    """The tiny market served by Serve on 127.0.0.1, its run directory holding a backtest and
    walk-forward forecasts written by the project's own code (bench/tiny_report.py)."""
    from ray import serve

    settings = tiny_settings(tmp_path_factory.mktemp("console"))
    write_tiny_run(settings)
    client = serve_tiny(settings)
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:  # the models load after serve.run returns
        assert time.monotonic() < deadline, "the tiny service never became ready"
        time.sleep(0.5)
    yield Console(str(client.base_url).rstrip("/"), USER, ADMIN, settings, client)
    client.close()
    serve.shutdown()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class ConsolePage:
    """A Playwright ``Page`` (every attribute not defined here is the page's) with the checks above."""

    def __init__(self, page: Page, base: str, shots: Path) -> None:
        self.raw, self.base, self.shots = page, base, shots
        self.blocked: list[str] = []  # URLs the page asked for off 127.0.0.1
        self.errors: list[str] = []  # console errors and uncaught exceptions, in order
        self.allowed: list[re.Pattern] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.context.route("**/*", self._route)

    def __getattr__(self, name: str):
        return getattr(self.raw, name)

    def path(self, path: str) -> str:
        """The console's URL for ``path`` ("/ui/", "/docs")."""
        return self.base + path

    def shot(self, name: str) -> Path:
        """A full-page screenshot, ``<test's tmp_path>/screenshots/<name>.png``."""
        target = self.shots / f"{name}.png"
        self.raw.screenshot(path=str(target), full_page=True)
        return target

    def allow_console(self, pattern: str) -> None:
        """A console error the test expects (e.g. the browser's own line for a 401 it provokes)."""
        self.allowed.append(re.compile(pattern))

    def _console(self, message) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            self.errors.append(f"console error: {message.text}")

    def _route(self, route) -> None:
        if urlsplit(route.request.url).hostname == LOCAL:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")


@pytest.fixture
def page(browser, console, tmp_path) -> Iterator[ConsolePage]:
    context = browser.new_context(viewport=VIEWPORT)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    tab = ConsolePage(context.new_page(), console.url, shots)
    yield tab
    try:
        tab.shot("at-teardown")  # what the page showed last, kept for a failure's diagnosis
    finally:
        context.close()
    problems = [*(f"blocked request to {u}" for u in tab.blocked), *tab.errors]
    if problems:
        listed = "\n".join(problems)
        pytest.fail(f"the page logged errors or left 127.0.0.1 (screenshots in {shots}):\n{listed}", pytrace=False)
