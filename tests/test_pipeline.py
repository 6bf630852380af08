"""The thin end-to-end slice: emulator over real HTTP -> four assets -> a real DuckDB file."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import duckdb

from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range


def _daily(settings: Settings, table: str, integration_id: str) -> dict:
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        return dict(
            conn.execute(
                f"SELECT cost_date, sum(amount_usd) FROM {table} "
                "WHERE integration_id = ? GROUP BY 1",
                [integration_id],
            ).fetchall()
        )


def test_seven_day_range_rollups_equal_emulator_totals(
    settings, registry: Registry, instance, emulator
):
    integration = registry.add("Test Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    dates = last_days(7)

    result = run_range(settings, instance, integration.id, dates)

    assert result.success
    expected = emulator.expected_totals(ORG_ID, dates.start, dates.end)
    expected = {day: total for day, total in expected.items() if total != 0}
    assert sum(expected.values()) > Decimal(0)
    for table in ("fct_costs", "rollup_model_daily", "rollup_token_type_daily"):
        assert _daily(settings, table, integration.id) == expected, table
    for asset in ("openai_cost_buckets", "fct_costs", "rollup_model_daily"):
        assert len(instance.get_materialized_partitions(dg.AssetKey(asset))) == 7
