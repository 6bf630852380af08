"""Issue 15, end to end: an Anthropic integration through the same CLI, assets, checks and tables
as an OpenAI one, beside it; names for who spent it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import duckdb
import pytest

from grafient_pipeline.providers import PROVIDERS
from grafient_pipeline.providers.anthropic.emulator import AnthropicEmulator
from grafient_pipeline.providers.base import PermissionDeniedError
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from tests.conftest import ADMIN_KEY, last_days, run_cli, run_range
from tests.test_idempotency import failure_message

CLAUDE_ORG = "org-claude-test"
CLAUDE_KEY = "sk-ant-admin01-test-0123456789abcdefghijklmnopqrstuvwxyz"
DATES = last_days(5)


@pytest.fixture
def claude(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicEmulator]:
    with AnthropicEmulator({CLAUDE_ORG: CLAUDE_KEY}, seed=7) as running:
        monkeypatch.setenv("GRAFIENT_ANTHROPIC_BASE_URL", running.base_url)
        yield running


def add(provider: str, label: str, key: str):
    return run_cli(
        "integrations", "add", "--provider", provider, "--label", label, "--plan", "pro",
        "--key-stdin", "--no-backfill", stdin=key + "\n",
    )  # fmt: skip


def rows(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_an_anthropic_integration_lands_exactly_beside_an_openai_one(
    settings, registry: Registry, instance, emulator, claude
):
    assert add("anthropic", "Claude Org", CLAUDE_KEY).returncode == 0
    assert add("openai", "OpenAI Org", ADMIN_KEY).returncode == 0
    stored = registry.get("claude-org")
    assert (stored.provider, stored.base_url) == ("anthropic", claude.base_url)

    for integration_id in ("claude-org", "openai-org"):
        result = run_range(settings, instance, integration_id, DATES)
        assert result.success, failure_message(result)

    per_day = dict(
        rows(
            settings,
            "SELECT cost_date, sum(amount_usd) FROM fct_costs "
            "WHERE provider = 'anthropic' GROUP BY 1",
        )
    )
    expected = claude.expected_totals(CLAUDE_ORG, DATES.start, DATES.end)
    assert per_day == {day: usd for day, usd in expected.items() if usd}  # cents / 100, exact
    raw = rows(
        settings, "SELECT sum(amount_cents) / 100 = sum(amount_usd) FROM raw_anthropic_costs"
    )
    assert raw == [(True,)]
    side_by_side = rows(settings, "SELECT DISTINCT provider FROM v_daily_costs ORDER BY 1")
    assert side_by_side == [("anthropic",), ("openai",)]
    providers = rows(
        settings, "SELECT DISTINCT x_Provider, ProviderName FROM focus_costs ORDER BY 1"
    )
    assert providers == [("anthropic", "Anthropic"), ("openai", "OpenAI")]
    rollups = rows(
        settings,
        "SELECT provider, sum(amount_usd) FROM rollup_token_type_daily GROUP BY 1 ORDER BY 1",
    )
    fct = rows(settings, "SELECT provider, sum(amount_usd) FROM fct_costs GROUP BY 1 ORDER BY 1")
    assert rollups == fct
    token_types = {t for (t,) in rows(settings, "SELECT DISTINCT token_type FROM fct_costs")}
    assert token_types <= {"input", "output", "cached_input", "cache_write", "other"}


def test_names_of_workspaces_and_keys_land_for_both_providers(
    settings, registry: Registry, instance, emulator, claude
):
    assert add("anthropic", "Claude Org", CLAUDE_KEY).returncode == 0
    assert add("openai", "OpenAI Org", ADMIN_KEY).returncode == 0
    for integration_id in ("claude-org", "openai-org"):
        assert run_range(settings, instance, integration_id, DATES).success

    named = rows(
        settings,
        "SELECT provider, count(*), count(name) FROM dim_projects GROUP BY 1 ORDER BY 1",
    )
    assert [p for p, _, _ in named] == ["anthropic", "openai"]
    assert all(total == with_name > 0 for _, total, with_name in named)
    unnamed = rows(
        settings,
        "SELECT count(*) FROM v_project_costs WHERE project_id IS NOT NULL "
        "AND project_name = project_id",
    )
    assert unnamed == [(0,)]  # every project in the costs has its name beside its id
    keys = rows(settings, "SELECT redacted_value FROM dim_api_keys")
    assert keys and not any(ADMIN_KEY[-12:] in (v or "") for (v,) in keys)


def test_a_key_that_cannot_read_names_still_syncs_costs(
    settings, registry: Registry, instance, claude, monkeypatch
):
    assert add("anthropic", "Claude Org", CLAUDE_KEY).returncode == 0

    def no_names(self):
        raise PermissionDeniedError("this key may not list workspaces")

    client_class = PROVIDERS["anthropic"].client
    monkeypatch.setattr(client_class, "iter_projects", no_names)

    result = run_range(settings, instance, "claude-org", DATES)

    assert result.success, failure_message(result)
    assert rows(settings, "SELECT count(*) FROM dim_projects") == [(0,)]
    assert rows(settings, "SELECT count(*) > 0 FROM fct_costs") == [(True,)]
    assert registry.get("claude-org").status == "active"


def test_a_regular_anthropic_key_is_refused_with_what_to_do(settings, claude):
    refused = add("anthropic", "Claude Org", "sk-ant-api03-" + "x" * 40)
    assert refused.returncode == 1
    assert "admin" in refused.stderr.lower() and "sk-ant-admin" in refused.stderr
    assert "x" * 20 not in refused.stderr


def test_a_revoked_anthropic_key_puts_the_integration_in_error(
    settings, registry: Registry, instance, claude
):
    assert add("anthropic", "Claude Org", CLAUDE_KEY).returncode == 0
    claude.revoke_key(CLAUDE_KEY)
    result = run_range(settings, instance, "claude-org", DATES)
    assert not result.success
    stored = registry.get("claude-org")
    assert stored.status == "error" and "401" in (stored.last_error or "")


def test_the_onboarding_window_is_the_plan_window_for_anthropic_too(settings, claude):
    added = run_cli(
        "integrations", "add", "--provider", "anthropic", "--label", "Claude Free", "--plan",
        "free", "--key-stdin", stdin=CLAUDE_KEY + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    days = rows(settings, "SELECT count(DISTINCT cost_date) FROM fct_costs")[0][0]
    assert 25 <= days <= 30
    assert Decimal(0) < rows(settings, "SELECT sum(amount_usd) FROM fct_costs")[0][0]
