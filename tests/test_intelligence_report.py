"""Issue 16: `grafient report` shows budget status, forecast and anomalies when the
intelligence tables exist (and exactly what it showed before when they do not)."""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal

import duckdb

from grafient_pipeline.console import print_report
from grafient_pipeline.intelligence.budgets import Budget
from grafient_pipeline.intelligence.tables import (
    compute_anomalies,
    compute_budget_statuses,
    compute_forecasts,
    load_spend,
    write_anomalies,
    write_budget_statuses,
    write_forecasts,
)
from grafient_pipeline.plans import DateRange
from grafient_pipeline.report import month_report
from tests.test_report import build_warehouse

NOVEMBER = DateRange(date(2026, 11, 1), date(2026, 11, 30))
TODAY = date(2026, 11, 21)


def facts() -> list[tuple]:
    rows = []
    for i in range(40):
        day = date(2026, 10, 12) + timedelta(days=i)
        amount = "900" if day == TODAY - timedelta(days=1) else "100"
        rows.append(("acme", day.isoformat(), "gpt-4o", "input", amount, day < TODAY))
    return rows


def test_report_shows_budgets_forecast_and_anomalies(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build_warehouse(path, facts())
    with duckdb.connect(str(path), read_only=True) as conn:
        assert month_report(conn, NOVEMBER).intelligence is None
    with duckdb.connect(str(path)) as conn:
        data = load_spend(conn, TODAY)
        write_forecasts(conn, compute_forecasts(data))
        write_anomalies(conn, compute_anomalies(data))
        budget = Budget(1, "acme", Decimal(2500), integration_id="acme")
        write_budget_statuses(conn, compute_budget_statuses(conn, [budget], TODAY))

    with duckdb.connect(str(path), read_only=True) as conn:
        report = month_report(conn, NOVEMBER)

    found = report.intelligence
    assert found is not None
    (status,) = found.budgets
    # Nov 1-19 at 100 a day, Nov 20 at 900 (data ends there): 2800.
    assert status["spend_usd"] == Decimal(2800) and status["thresholds_crossed"] == [50, 80, 100]
    assert [f["integration_id"] for f in found.forecast] == [None, "acme"]
    assert found.anomalies[0]["day"] == date(2026, 11, 20)
    assert found.anomalies[0]["impact_usd"] == Decimal(800)
    printed = io.StringIO()
    print_report(report, printed)
    text = printed.getvalue()
    assert "Budgets" in text and "100% on 2026-11-20" in text
    assert "Month-end forecast" in text and "Anomalies" in text and "spike" in text
    as_json = report.as_json()["intelligence"]
    assert as_json["budgets"][0]["spend_usd"] == "2800.0000000000000000"
