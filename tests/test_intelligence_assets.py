"""Issue 16 end to end in process: the emulator feeds a sync; the intelligence job materializes
budget_status, spend_forecast and spend_anomalies (with the no_spend_anomalies WARN check) on
that warehouse; alerts reach a local webhook over real HTTP, signed, and each arrives once
through a second sync, a re-run and a restatement that lowers spend."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from decimal import Decimal

import dagster as dg
import duckdb

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.intelligence.alert_log import deliver_pending
from grafient_pipeline.intelligence.channels import KEY_HEADER, SIGNATURE_HEADER, verify_signature
from grafient_pipeline.intelligence.store import add_budget, add_channel
from grafient_pipeline.plans import DateRange
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, run_range
from tests.test_alert_channels import Capture, capture  # noqa: F401 (fixture)

SECRET = "hook-secret-4f9a2c7e1b"


def intelligence(settings, instance) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def("spend_intelligence_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return result


def received(server: Capture) -> list[str]:
    keys = []
    for _path, headers, body in server.requests:
        assert verify_signature(SECRET, headers["X-Grafient-Timestamp"], body,
                                headers[SIGNATURE_HEADER])  # fmt: skip
        assert json.loads(body)["key"] == headers[KEY_HEADER]
        keys.append(headers[KEY_HEADER])
    return keys


def test_budgets_forecast_anomalies_and_alerts_arrive_once(
    settings,
    registry,
    instance,
    emulator,
    capture,  # noqa: F811
    monkeypatch,
):
    # The assets' "today": the 20th of last month, so the month has spend whatever the date.
    today = (utc_today().replace(day=1) - timedelta(days=1)).replace(day=20)
    monkeypatch.setattr("grafient_pipeline.defs.intelligence.utc_today", lambda: today)
    spike = next(
        day for day in (today - timedelta(days=n) for n in (1, 2, 3))
        if emulator.expected_total(ORG_ID, day, day) > 0
    )  # fmt: skip
    baseline = emulator.expected_totals(ORG_ID, today - timedelta(days=40), spike)
    typical = sorted(baseline.values())[len(baseline) // 2]
    factor = Decimal(max(20, math.ceil(15 * typical / baseline[spike])))
    emulator.restate_day(ORG_ID, spike, factor)
    integration = registry.add("Acme", "pro", ADMIN_KEY, organization_id=ORG_ID)
    window = DateRange(today - timedelta(days=45), today)
    assert run_range(settings, instance, integration.id, window).success
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (month_to_date,) = conn.execute(
            "SELECT coalesce(sum(amount_usd), 0) FROM fct_costs WHERE cost_date BETWEEN ? AND ?",
            [today.replace(day=1), today],
        ).fetchone()
    monthly = Decimal(math.ceil(month_to_date / Decimal("0.85")))  # about 85 % used
    budget = add_budget(registry, "Acme monthly", monthly, integration_id=integration.id)
    add_channel(registry, "hook", "webhook", {"host": "127.0.0.1"},
                {"url": capture.url + "/hook", "secret": SECRET})  # fmt: skip

    result = intelligence(settings, instance)

    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        status = conn.execute(
            "SELECT spend_usd, percent_used, thresholds_crossed, forecast_usd, forecast_low_usd, "
            "forecast_high_usd FROM budget_status WHERE month = ?",
            [today.replace(day=1)],
        ).fetchone()
        forecast = conn.execute(
            "SELECT actual_usd, forecast_usd FROM spend_forecast "
            "WHERE integration_id IS NULL AND model IS NULL"
        ).fetchone()
        total_anomaly = conn.execute(
            "SELECT direction, actual_usd, first_seen FROM spend_anomalies "
            "WHERE dimension = 'total' AND day = ?",
            [spike],
        ).fetchone()
    assert status[0] == month_to_date
    assert Decimal(80) <= status[1] < Decimal(100)
    assert status[2][:2] == [50, 80]
    assert status[4] <= status[3] <= status[5]
    assert forecast[1] >= forecast[0] > 0
    assert total_anomaly is not None and total_anomaly[0] == "spike"
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "no_spend_anomalies" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    top = check.metadata["top_anomalies"].value
    assert any(row["day"] == spike.isoformat() for row in top)

    deliver_pending(registry)
    first = received(capture)
    month = f"{today:%Y-%m}"
    assert f"budget:{budget.id}:{month}:50" in first
    assert f"budget:{budget.id}:{month}:80" in first
    anomaly_key = f"anomaly:{integration.id}:total:all:{spike.isoformat()}"
    assert anomaly_key in first
    assert len(first) == len(set(first))

    # A second sync and a re-run: nothing new arrives.
    assert run_range(settings, instance, integration.id, window).success
    intelligence(settings, instance)
    deliver_pending(registry)
    everything = received(capture)
    assert len(everything) == len(set(everything))  # every alert arrived once
    budgets = [key for key in everything if key.startswith("budget:")]
    assert budgets == [key for key in first if key.startswith("budget:")]

    # A restatement takes spend back under 80 %, then up again: nothing is sent again.
    days = [
        today.replace(day=1) + timedelta(days=i)
        for i in range((today - today.replace(day=1)).days + 1)
    ]
    for day in days:
        emulator.restate_day(ORG_ID, day, Decimal("0.5"))
    assert run_range(settings, instance, integration.id, DateRange(days[0], today)).success
    intelligence(settings, instance)
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (percent,) = conn.execute(
            "SELECT percent_used FROM budget_status WHERE month = ?", [today.replace(day=1)]
        ).fetchone()
        (seen_again,) = conn.execute(
            "SELECT first_seen FROM spend_anomalies WHERE dimension = 'total' AND day = ?",
            [spike],
        ).fetchone() or (None,)
    assert percent < 80
    if seen_again is not None:  # still an anomaly at half: first seen is kept
        assert seen_again == total_anomaly[2]
    for day in days:
        emulator.restate_day(ORG_ID, day, Decimal(2))
    assert run_range(settings, instance, integration.id, DateRange(days[0], today)).success
    intelligence(settings, instance)
    deliver_pending(registry)
    everything = received(capture)
    assert len(everything) == len(set(everything))  # every alert arrived once
    budgets = [key for key in everything if key.startswith("budget:")]
    assert budgets == [key for key in first if key.startswith("budget:")]
