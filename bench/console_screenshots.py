"""The README's two console screenshots (docs/console-recommend.png, docs/console-plan.png) at
1280x800: the quickstart run's models and backtest served in-process (bench/tiny_market.py's
``in_process_service``, no Serve) from a copy in a temporary directory (the run is never written to),
driven by Playwright in Debian's Chromium.

    python -m bench.console_screenshots [--run runs/quickstart] [--registry runs/registry] [--out docs]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.tiny_market import ADMIN, in_process_service, serve_in_thread
from rayfolio.serving.audit import sqlite_url
from rayfolio.serving.settings import ServeSettings, splits_of

CHROMIUM = "/usr/bin/chromium"
COPIED = ("features", "explanations", "metrics.json", "returns.parquet", "forecasts.parquet", "config.yaml")


def served_copy(run: Path, registry: Path, root: Path) -> ServeSettings:
    """Settings serving a copy of ``run`` and ``registry`` under ``root`` (its audit log there too)."""
    for name in COPIED:
        source = run / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        elif source.is_file():
            shutil.copy2(source, root / name)
    shutil.copytree(registry, root / "registry")
    return ServeSettings(store=root / "features", registry=root / "registry", splits=splits_of(root / "config.yaml"),
                         audit_url=sqlite_url(root / "audit.db"), run_dir=root,
                         explanations=root / "explanations")  # fmt: skip


def screenshots(base: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    recommend, plan = out / "console-recommend.png", out / "console-plan.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{base}/ui/")
        page.get_by_label("API key").fill(ADMIN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Models", exact=True).wait_for(timeout=60_000)

        page.get_by_role("link", name="Recommend").click()
        page.get_by_role("button", name="Get a recommendation").click()
        page.locator("#weights-chart canvas").wait_for(timeout=60_000)
        page.get_by_role("button", name="Explain this recommendation").click()
        page.locator("#attribution-chart canvas").wait_for(timeout=120_000)
        page.locator("#rec-title").evaluate("e => e.scrollIntoView()")  # the status, risk and weights chart
        page.screenshot(path=str(recommend))

        page.get_by_role("link", name="Plan").click()
        page.get_by_role("button", name="Run the plan").click()
        page.locator("#fan-chart canvas").wait_for(timeout=60_000)
        page.locator("#plan-title").evaluate("e => e.scrollIntoView()")  # the figures and the fan chart
        page.screenshot(path=str(plan))
        browser.close()
    return [recommend, plan]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--registry", type=Path, default=Path("runs/registry"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        app = in_process_service(served_copy(args.run, args.registry, Path(tmp)))
        base, stop = serve_in_thread(app)
        try:
            for path in screenshots(base, args.out):
                print(f"{path}: {path.stat().st_size / 1024:.0f} KB")
        finally:
            stop()


if __name__ == "__main__":
    main()
