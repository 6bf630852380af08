"""Issue 7, in a real browser: Debian's chromium (headless, driven by Playwright) shows the
onboarded integration's materialized partitions in the Dagster UI, and the asset graph.

`GRAFIENT_REFRESH_SCREENSHOT=1 .venv/bin/pytest -p no:logging tests/e2e/test_browser.py`
also writes the asset graph screenshot to docs/asset-graph.png (the one the README shows).
Playwright's own browser download is not used: the test needs /usr/bin/chromium
(`apt-get install chromium`; .ci/run installs it). Without it the test is skipped, except in CI
(CI=true), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from grafient_pipeline.defs.costs.assets import GROUP
from tests.e2e.conftest import ASSETS, LOCATION, PROJECT_ROOT, DagsterStack, Onboarded

pytestmark = pytest.mark.e2e

# Debian's chromium; GRAFIENT_E2E_CHROMIUM points elsewhere (e.g. /usr/bin/chromium-browser).
CHROMIUM = Path(os.environ.get("GRAFIENT_E2E_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 900}
UI_TIMEOUT_MS = 60_000
DOCS_SCREENSHOT = PROJECT_ROOT / "docs" / "asset-graph.png"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; requested before the Dagster fixtures so a skip costs nothing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so the browser test may not be skipped")
        pytest.skip(reason)
    return str(CHROMIUM)


@pytest.fixture
def page(chromium: str, dagster_stack: DagsterStack) -> Iterator:
    from playwright.sync_api import sync_playwright

    # The UI greets a fresh instance with a "Join the Dagster community" dialog over the page;
    # mark it seen on the instance, as its Skip button does.
    dagster_stack.graphql("mutation E2ENux { setNuxSeen }")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(UI_TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def test_asset_page_shows_materialized_partitions(
    chromium: str, dagster_stack: DagsterStack, onboarded: Onboarded, page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    url, integration_id, window = dagster_stack.url, onboarded.integration_id, onboarded.dates

    page.goto(f"{url}/assets/fct_costs?view=partitions")
    expect(page.get_by_text(f"Materialized ({window.days})", exact=True)).to_be_visible()
    expect(page.get_by_text("Failed (0)", exact=True)).to_be_visible()
    expect(page.get_by_text(integration_id, exact=True).first).to_be_visible()
    expect(page.get_by_text(window.end.isoformat(), exact=True).first).to_be_visible()
    partitions_png = tmp_path / "fct_costs-partitions.png"
    page.screenshot(path=str(partitions_png))
    assert partitions_png.stat().st_size > 10_000
    print(f"\n[e2e] partitions page screenshot: {partitions_png}")

    # The asset graph of the group: the four assets, their lineage and partition health.
    page.goto(f"{url}/locations/{LOCATION}/asset-groups/{GROUP}")
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^\d+% filled$"))).to_have_count(len(ASSETS))
    page.wait_for_timeout(1_000)  # let the graph finish zooming to fit
    graph_png = tmp_path / "asset-graph.png"
    page.screenshot(path=str(graph_png))
    assert graph_png.stat().st_size > 10_000
    print(f"[e2e] asset graph screenshot: {graph_png}")
    if os.environ.get("GRAFIENT_REFRESH_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(graph_png, DOCS_SCREENSHOT)
        print(f"[e2e] refreshed {DOCS_SCREENSHOT}")
