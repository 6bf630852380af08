"""Issue 7, through the webserver: the sensor onboards a CLI-added integration, a partition
backfill launched through GraphQL the way the UI does lands exactly the emulator's totals."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from grafient_pipeline.plans import DateRange
from tests.conftest import ORG_ID
from tests.e2e.conftest import (
    ASSETS,
    BACKFILL_SECONDS,
    TERMINAL_RUN_STATUSES,
    DagsterStack,
    E2EError,
    Onboarded,
    grafient_cli,
    run_range,
    wait_for,
)

pytestmark = pytest.mark.e2e

TABLES = ("raw_openai_costs", "fct_costs", "rollup_model_daily", "rollup_token_type_daily")
BACKFILL_DAYS = 4
RESTATE_FACTOR = Decimal("1.25")

# What the UI's "Materialize selected" / "Launch backfill" dialog sends for partitioned assets
# (LaunchAssetChoosePartitionsDialog in dagster-webserver 1.13): assetSelection + partitionNames.
LAUNCH_BACKFILL = """
mutation E2ELaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}"""

BACKFILL_STATUS = """
query E2EBackfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      isAssetBackfill
      error { message }
      runs { runId status tags { key value } }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}"""

PARTITION_STATS = """
query E2EPartitionStats($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } }
  }
}"""

BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def expected_totals(stack: DagsterStack, dates: DateRange) -> dict:
    """The emulator's per-day totals over `dates`; a day it has not started serving is 0."""
    served = stack.emulator.expected_totals(ORG_ID, dates.start, dates.end)
    return {day: served.get(day, Decimal(0)) for day in dates.dates()}


def assert_warehouse_matches(stack: DagsterStack, integration_id: str, dates: DateRange) -> None:
    """Every table's per-day total over `dates` equals the emulator's, to the last decimal."""
    expected = expected_totals(stack, dates)
    for table in TABLES:
        totals = stack.warehouse_totals(table, integration_id)
        actual = {day: totals.get(day, Decimal(0)) for day in dates.dates()}
        wrong = {d: (actual[d], expected[d]) for d in dates.dates() if actual[d] != expected[d]}
        assert not wrong, f"{table}: (warehouse, emulator) differ on {len(wrong)} day(s): {wrong}"
        outside = {d: t for d, t in totals.items() if not dates.start <= d <= dates.end}
        assert not outside, f"{table}: rows outside {dates}: {sorted(outside)}"


def fct_costs_partition_stats(stack: DagsterStack) -> dict[str, Any]:
    node = stack.graphql(PARTITION_STATS, {"assetKey": {"path": ["fct_costs"]}})
    return node["assetNodeOrError"]["partitionStats"]


def test_sensor_onboarding_then_ui_backfill_through_graphql(
    dagster_stack: DagsterStack, onboarded: Onboarded
) -> None:
    stack, integration_id, window = dagster_stack, onboarded.integration_id, onboarded.dates

    # The sensor's onboarding run covered the Free plan window (30 days, today included).
    assert window.days == 30, window
    assert_warehouse_matches(stack, integration_id, window)
    stats = fct_costs_partition_stats(stack)
    assert stats["numMaterialized"] == window.days, stats

    # OpenAI restates a complete day inside the slice we are about to backfill.
    days = window.dates()[-BACKFILL_DAYS:]
    served = expected_totals(stack, DateRange(days[0], days[-1]))
    restated = next((d for d in reversed(days[:-1]) if served[d] > 0), None)
    if restated is not None:  # None only if all three days had no spend (about 1 in 1000)
        stack.emulator.restate_day(ORG_ID, restated, RESTATE_FACTOR)

    # Launch the backfill the way the asset page does: assets + multi-partition keys.
    partition_names = [f"{day.isoformat()}|{integration_id}" for day in days]
    params = {
        "assetSelection": [{"path": [key]} for key in ASSETS],
        "partitionNames": partition_names,
        "fromFailure": False,
        "tags": [{"key": "grafient/reason", "value": "e2e backfill"}],
        "title": "e2e: re-pull the last days",
    }
    started = time.monotonic()
    launched = stack.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished_backfill() -> dict[str, Any] | None:
        if stack.process.poll() is not None:
            raise E2EError(f"dagster dev exited (code {stack.process.returncode})")
        status = stack.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})
        backfill = status["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise E2EError(f"backfill {backfill_id}: {backfill}")
        runs_done = all(r["status"] in TERMINAL_RUN_STATUSES for r in backfill["runs"])
        return backfill if backfill["status"] in BACKFILL_DONE and runs_done else None

    backfill = wait_for(
        f"backfill {backfill_id} to complete",
        finished_backfill,
        BACKFILL_SECONDS,
        lambda: f"backfill {backfill_id}\n{stack.diagnostics()}",
    )
    print(
        f"\n[e2e] backfill {backfill_id} {backfill['status']} in {time.monotonic() - started:.1f} s"
    )
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, (
        f"{backfill}\n{stack.diagnostics()}"
    )
    assert backfill["isAssetBackfill"]
    # BackfillPolicy.single_run(): the whole slice is one run, tagged with its range.
    (run,) = backfill["runs"]
    assert run["status"] == "SUCCESS", f"{run}\n{stack.diagnostics()}"
    assert run_range(run) == (integration_id, DateRange(days[0], days[-1]))
    assert {"key": "grafient/reason", "value": "e2e backfill"} in run["tags"]

    # DuckDB (opened read-only, now that no run writes it) holds exactly the emulator's figures,
    # the restated day included; re-running the slice did not duplicate anything.
    assert_warehouse_matches(stack, integration_id, window)
    if restated is not None:
        fct = stack.warehouse_totals("fct_costs", integration_id)
        now_served = expected_totals(stack, DateRange(restated, restated))[restated]
        assert fct[restated] == now_served != served[restated]
    assert fct_costs_partition_stats(stack)["numMaterialized"] == window.days
    assert window.end - window.start == timedelta(days=29)


def test_cli_force_sync_submits_to_the_running_webserver(
    dagster_stack: DagsterStack, onboarded: Onboarded
) -> None:
    """`grafient sync` hands the run to the webserver when one answers, so it shows in the UI."""
    stack, integration_id = dagster_stack, onboarded.integration_id
    assert stack.env["GRAFIENT_DAGSTER_URL"] == stack.url

    synced = grafient_cli(stack.env, "sync", integration_id, timeout=240)

    assert synced.returncode == 0, f"{synced.stdout}\n{synced.stderr}\n{stack.diagnostics()}"
    assert f"submitted to {stack.url}" in synced.stdout, synced.stdout
    forced = stack.runs({"grafient/reason": "force sync"}, job="force_sync")
    assert [run["status"] for run in forced] == ["SUCCESS"], forced
    today = onboarded.dates.end
    assert run_range(forced[0]) == (integration_id, DateRange(today - timedelta(days=1), today))
    assert_warehouse_matches(stack, integration_id, onboarded.dates)
