"""Issue 17 in a real browser (Debian's chromium driven by Playwright): `grafient dashboard`
over the emulator. Add an integration through the form (green check, then its card with the
backfill's progress), the Dashboard's totals equal `grafient sql`'s, Force Sync succeeds, a
revoked key shows the error badge and its reason, a POST without the CSRF token is refused, and a
hostile label is shown as text. No Dagster webserver: the actions run in-process in the
dashboard's worker, as the CLI does then.

`GRAFIENT_REFRESH_SCREENSHOT=1` also copies the two pages' screenshots to docs/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import load_settings
from tests.conftest import ADMIN_KEY, MASTER_KEY, ORG_ID, OTHER_KEY, OTHER_ORG_ID, run_cli
from tests.e2e.conftest import PROJECT_ROOT, free_port, stop_process_group
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, in_ci

pytestmark = pytest.mark.e2e

LABEL = "E2E Browser Org"
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
JOB_MS = 90_000


@dataclass
class Dashboard:
    url: str
    env: dict[str, str]
    emulator: CostsEmulator


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so the browser test may not be skipped")
        pytest.skip(reason)
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def dashboard(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dash-e2e")
    with CostsEmulator({ORG_ID: ADMIN_KEY, OTHER_ORG_ID: OTHER_KEY}, seed=3) as emulator:
        port = free_port()
        env = {
            **os.environ,
            "GRAFIENT_HOME": str(root / "home"),
            "GRAFIENT_OPENAI_BASE_URL": emulator.base_url,
            "GRAFIENT_MASTER_KEY": MASTER_KEY,
            "GRAFIENT_DAGSTER_URL": "http://127.0.0.1:9",  # no webserver: in-process runs
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("GRAFIENT_WAREHOUSE", None)
        env.pop("GRAFIENT_DASHBOARD_TOKEN", None)
        log = (root / "dashboard.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "grafient_pipeline.cli", "dashboard", "--port", str(port)],
            env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    assert process.poll() is None, (root / "dashboard.log").read_text()
                    assert time.monotonic() < deadline, "the dashboard did not start in 60 s"
                    time.sleep(0.2)
            yield Dashboard(url, env, emulator)
        finally:
            leftovers = stop_process_group(process, grace=10)
            log.close()
            assert not leftovers, leftovers


@pytest.fixture
def page(chromium_path: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            yield context.new_page()
        finally:
            browser.close()


def sql_value(env: dict[str, str], query: str) -> Decimal:
    done = run_cli("sql", query, "--csv", env=env, cwd=str(PROJECT_ROOT))
    assert done.returncode == 0, done.stderr
    return Decimal(done.stdout.strip().splitlines()[-1] or "0")


def test_the_dashboard_in_a_browser(dashboard: Dashboard, page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = dashboard.url

    # Add Integration: Test Connection's green check, then Add; the card shows the backfill.
    page.goto(f"{url}/integrations")
    key_field = page.get_by_label("Admin key")
    expect(key_field).to_have_attribute("placeholder", "sk-admin-…")
    page.get_by_label("Provider").select_option("anthropic")  # each provider's own key prefix
    expect(key_field).to_have_attribute("placeholder", "sk-ant-admin…")
    page.get_by_label("Provider").select_option("openai")
    page.get_by_label("Label").fill(LABEL)
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Test Connection").click()
    expect(page.locator("#test-result")).to_contain_text(
        f"✓ Connected to OpenAI organization {ORG_ID}"
    )
    page.get_by_role("button", name="Add Integration", exact=True).click()
    card = page.locator("article.card", has_text=LABEL)
    expect(card).to_be_visible()
    expect(card.locator(".badge")).to_have_text("backfilling")
    expect(card.locator("progress")).to_be_visible()
    expect(page.get_by_label("Admin key")).to_have_value("")  # the key is not kept
    assert ADMIN_KEY not in page.content()
    card = page.locator("article.card", has_text=LABEL)  # the page reloads when it ends
    expect(card.get_by_text("Backfill succeeded")).to_be_visible(timeout=JOB_MS)
    expect(card.locator(".badge")).to_have_text("active")

    # The Dashboard's totals equal `grafient sql`'s, to the cent.
    mtd = sql_value(
        dashboard.env, "SELECT round(coalesce(sum(amount_usd), 0), 2) FROM v_month_to_date"
    )
    last30 = sql_value(
        dashboard.env,
        "SELECT round(coalesce(sum(amount_usd), 0), 2) FROM v_daily_costs "
        "WHERE cost_date >= (now() AT TIME ZONE 'UTC')::DATE - 29",
    )
    page.goto(url)
    expect(page.locator("#kpi-mtd")).to_have_text(f"${mtd:,.2f}")
    expect(page.locator("#by-model-title + span")).to_contain_text(f"${last30:,.2f}")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # Force Sync runs and succeeds.
    page.goto(f"{url}/integrations")
    card = page.locator("article.card", has_text=LABEL)
    card.get_by_role("button", name="Force Sync").click()
    card = page.locator("article.card", has_text=LABEL)
    expect(card.get_by_text("Sync succeeded")).to_be_visible(timeout=JOB_MS)
    page.screenshot(path=str(tmp_path / "integrations.png"), full_page=True)

    # A revoked key: Test Connection shows the error badge and the reason.
    dashboard.emulator.revoke_key(ADMIN_KEY)
    card.get_by_role("button", name="Test Connection").click()
    card = page.locator("article.card", has_text=LABEL)
    expect(card.locator(".badge")).to_have_text("error")
    expect(card.locator(".error-reason")).to_contain_text("Error:")
    expect(page.locator(".flash-error")).to_contain_text("Test Connection failed")

    # A POST without the CSRF token is refused.
    integration_id = Registry.from_settings(load_settings(dashboard.env)).list()[0].id
    refused = page.request.post(f"{url}/integrations/{integration_id}/sync", form={"x": "1"})
    assert refused.status == 403

    # A hostile label is shown as text (and runs nothing).
    registry = Registry.from_settings(load_settings(dashboard.env))
    registry.add(HOSTILE, "free", OTHER_KEY, organization_id=OTHER_ORG_ID)
    page.goto(f"{url}/integrations")
    expect(page.get_by_role("heading", name=HOSTILE)).to_be_visible()
    assert dialogs == []

    if os.environ.get("GRAFIENT_REFRESH_SCREENSHOT") == "1":
        for name in ("dashboard.png", "integrations.png"):
            shutil.copyfile(tmp_path / name, PROJECT_ROOT / "docs" / name)
