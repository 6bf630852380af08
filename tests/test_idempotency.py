"""Issue 5, data correctness: reruns are idempotent, restated days are replaced, amounts are
exact whatever their JSON spelling, a revoked key and a plan cap fail cleanly.

Also home of the warehouse inspection helpers the other reliability tests import.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from grafient_pipeline.sync import utc_today
from tests.conftest import (
    ADMIN_KEY,
    ORG_ID,
    OTHER_KEY,
    OTHER_ORG_ID,
    last_days,
    run_range,
)

COST_TABLES = ("raw_openai_costs", "fct_costs", "rollup_model_daily", "rollup_token_type_daily")
VOLATILE = {"fetched_at", "run_id"}  # legitimately new on every run
DAY_AND_AMOUNT = {
    "raw_openai_costs": ("bucket_start::DATE", "amount_value"),
    "fct_costs": ("cost_date", "amount_usd"),
    "rollup_model_daily": ("cost_date", "amount_usd"),
    "rollup_token_type_daily": ("cost_date", "amount_usd"),
}
GRAIN = {  # one row per API result: these columns identify it
    "raw_openai_costs": "integration_id, bucket_start, line_item, project_id, api_key_id",
    "fct_costs": "integration_id, cost_date, line_item, project_id, api_key_id",
    "rollup_model_daily": "integration_id, cost_date, model",
    "rollup_token_type_daily": "integration_id, cost_date, token_type",
}
SECRET_PIECE = 12


# ----------------------------------------------------------------------------- helpers


def warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(settings.warehouse, read_only=True)


def snapshot(settings: Settings, *, volatile: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every cost table, sorted; without fetched_at/run_id unless ``volatile``."""
    if not Path(settings.warehouse).exists():
        return {}
    out: dict[str, list[tuple[Any, ...]]] = {}
    with warehouse(settings) as conn:
        for table in (*COST_TABLES, "dim_line_items"):
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
                if volatile or name not in VOLATILE
            ]
            if not columns:
                continue
            listed = ", ".join(columns)
            out[table] = conn.execute(f"SELECT {listed} FROM {table} ORDER BY ALL").fetchall()
    return out


def daily_totals(settings: Settings, table: str, integration_id: str) -> dict[date, Decimal]:
    day, amount = DAY_AND_AMOUNT[table]
    with warehouse(settings) as conn:
        rows = conn.execute(
            f"SELECT {day} AS d, sum({amount}) FROM {table} WHERE integration_id = ? GROUP BY d",
            [integration_id],
        ).fetchall()
    return {d: Decimal(total) for d, total in rows}


def duplicates(settings: Settings, table: str = "raw_openai_costs") -> int:
    """Rows beyond the first per grain key (NULLs group together, as they should)."""
    with warehouse(settings) as conn:
        (extra,) = conn.execute(
            f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
            f"GROUP BY {GRAIN[table]})"
        ).fetchone()
    return int(extra)


def expected_nonzero(emulator: CostsEmulator, org: str, start: date, end: date) -> dict:
    """The emulator's per-day totals; days without spend hold no rows, so they are left out."""
    return {d: t for d, t in emulator.expected_totals(org, start, end).items() if t != 0}


def assert_exact(settings: Settings, emulator: CostsEmulator, integration_id: str, org: str,
                 start: date, end: date) -> None:  # fmt: skip
    """Every table holds, per day, exactly the emulator's totals (no partial day), no dupes."""
    expected = expected_nonzero(emulator, org, start, end)
    assert sum(expected.values()) > 0
    for table in COST_TABLES:
        got = {
            d: t
            for d, t in daily_totals(settings, table, integration_id).items()
            if start <= d <= end
        }
        assert got == expected, table
        assert duplicates(settings, table) == 0, table


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The one error a failed run reports, without Dagster's ``...Failure: `` class prefix.

    Only a deliberate ``dg.Failure`` counts as a clear error: any other exception keeps its
    class name in front, so checks on the message's start catch unexpected crashes.
    """
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1, [e.step_key for e in failures]
    error = failures[0].step_failure_data.error
    assert error is not None
    return re.sub(r"^dagster\._core\.definitions\.events\.Failure: ", "", error.message.strip())


def materialized_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.is_step_success}


def key_pieces(key: str) -> set[str]:
    return {key[i : i + SECRET_PIECE] for i in range(len(key) - SECRET_PIECE + 1)}


def assert_no_key(text: str, key: str) -> None:
    leaked = [piece for piece in key_pieces(key) if piece in text]
    assert not leaked, f"key material in {text[:80]!r}..."


# ----------------------------------------------------------------------------- tests


def test_three_reruns_give_identical_tables_and_a_restated_day_is_replaced(
    settings, registry: Registry, instance, emulator: CostsEmulator
):
    integration = registry.add("Idempotent Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    dates = last_days(4)

    snapshots = []
    for _ in range(3):
        assert run_range(settings, instance, integration.id, dates).success
        snapshots.append(snapshot(settings))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert len(snapshots[0]["raw_openai_costs"]) > 0
    assert_exact(settings, emulator, integration.id, ORG_ID, dates.start, dates.end)

    before = expected_nonzero(emulator, ORG_ID, dates.start, dates.end)
    restated = max(before)  # a past day with spend
    emulator.restate_day(ORG_ID, restated, Decimal("1.37"))
    assert emulator.expected_total(ORG_ID, restated, restated) != before[restated]

    assert run_range(settings, instance, integration.id, dates).success

    assert_exact(settings, emulator, integration.id, ORG_ID, dates.start, dates.end)
    after = snapshot(settings)
    for table in ("raw_openai_costs", "fct_costs"):
        day_of = (lambda r: r[1].date()) if table == "raw_openai_costs" else (lambda r: r[3])
        untouched_before = [r for r in snapshots[0][table] if day_of(r) != restated]
        untouched_after = [r for r in after[table] if day_of(r) != restated]
        assert untouched_after == untouched_before, table
        assert len(after[table]) == len(snapshots[0][table]), table


def test_string_exponent_and_sixteen_decimal_amounts_are_exact(
    settings, registry: Registry, instance, emulator: CostsEmulator
):
    emulator.faults.amounts_as_strings = True
    emulator.faults.extra_keys = True
    integration = registry.add("Stringly Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    dates = last_days(5)

    assert run_range(settings, instance, integration.id, dates).success

    assert_exact(settings, emulator, integration.id, ORG_ID, dates.start, dates.end)
    with warehouse(settings) as conn:
        rows = conn.execute("SELECT amount_value, raw_json FROM raw_openai_costs").fetchall()
    spellings = [json.loads(raw)["amount"]["value"] for _, raw in rows]
    assert all(isinstance(s, str) for s in spellings)
    assert any("e-" in s for s in spellings), "no exponent-notation amount was exercised"
    assert any(len(s.partition(".")[2]) == 16 for s in spellings), "no 16-decimal amount"
    for (stored, _), spelled in zip(rows, spellings, strict=True):
        assert stored == Decimal(spelled)  # row by row, to the last of 16 decimals


def test_revoked_key_fails_clearly_sets_error_and_leaves_all_data_alone(
    settings, registry: Registry, instance, emulator: CostsEmulator
):
    revoked = registry.add("Revoked Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    other = registry.add("Healthy Org", "pro", OTHER_KEY, organization_id=OTHER_ORG_ID)
    dates = last_days(3)
    assert run_range(settings, instance, revoked.id, dates).success
    assert run_range(settings, instance, other.id, dates).success
    before = snapshot(settings, volatile=True)
    emulator.revoke_key(ADMIN_KEY)

    result = run_range(settings, instance, revoked.id, dates)

    assert not result.success
    message = failure_message(result)
    assert revoked.id in message and "401" in message and "revoked" in message
    assert_no_key(message, ADMIN_KEY)
    assert materialized_steps(result) == set()
    assert snapshot(settings, volatile=True) == before  # its rows and the other's: untouched
    row = registry.get(revoked.id)
    assert row.status == "error"
    assert row.last_error and "401" in row.last_error and "revoked" in row.last_error
    assert_no_key(row.last_error, ADMIN_KEY)
    assert registry.get(other.id).status == "active"
    assert_exact(settings, emulator, other.id, OTHER_ORG_ID, dates.start, dates.end)


def test_plan_cap_is_refused_before_any_request(
    settings, registry: Registry, instance, emulator: CostsEmulator
):
    integration = registry.add("Free Org", "free", ADMIN_KEY, organization_id=ORG_ID)
    today = utc_today()
    old = last_days(3, end=today - timedelta(days=40))
    requests_before = emulator.request_count

    result = run_range(settings, instance, integration.id, old)

    assert not result.success
    assert emulator.request_count == requests_before
    message = failure_message(result)
    earliest = (today - timedelta(days=29)).isoformat()
    assert integration.id in message
    assert "free plan" in message and "30-day" in message and earliest in message
    assert materialized_steps(result) == set()
    assert snapshot(settings) in ({}, {t: [] for t in (*COST_TABLES, "dim_line_items")})
