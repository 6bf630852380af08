"""workspace.yaml loads `grafient_pipeline.definitions:defs`, as `dagster dev` would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from grafient_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parent.parent


def test_dagster_definitions_validate_loads_the_workspace(tmp_path):
    env = {**os.environ, "GRAFIENT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_defs_hold_the_contract_names():
    assert isinstance(defs, dg.Definitions)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "openai_cost_buckets",
        "fct_costs",
        "rollup_model_daily",
        "rollup_token_type_daily",
        "budget_status",
        "spend_forecast",
        "spend_anomalies",
    }
    for name in ("openai_costs_job", "force_sync"):
        assert defs.resolve_job_def(name)
    assert defs.resolve_schedule_def("daily_openai_sync")
    assert defs.resolve_sensor_def("integrations_sensor")
    assert defs.resolve_sensor_def("deliver_alerts")
    assert defs.resolve_schedule_def("daily_digest_0900_utc")


def test_sync_runs_do_not_run_the_0900_freshness_check():
    job = defs.resolve_job_def("openai_costs_job")
    checks = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert "reconciles_with_raw" in checks
    assert "yesterday_synced_by_0900_utc" not in checks
