"""The warehouse side of spend intelligence: read the daily series, write the three tables.

`budget_status`, `spend_forecast` and `spend_anomalies` are fully derived from the rollups
(and fct_costs for budget filters) each run, so each run replaces its table whole
(CREATE OR REPLACE TABLE, in the caller's transaction); the one thing carried over is an
anomaly's `first_seen`. No dagster here: the assets, the demo and the tests call these.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb

from grafient_pipeline.intelligence.anomalies import Anomaly, AnomalySettings, SeriesKey, detect
from grafient_pipeline.intelligence.budgets import Budget, BudgetStatus, budget_statuses
from grafient_pipeline.intelligence.forecast import Forecast, forecast_month
from grafient_pipeline.intelligence.messages import DigestFacts, usd

# Anomalies on the last few complete days are "new": they alert and fail the WARN check. Older
# ones (a backfill's history) are kept in the table only. Three days: the daily re-pull window.
RECENT_DAYS = 3
NO_MODEL = "(no model)"
Daily = dict[date, Decimal]

BUDGET_STATUS_DDL = """CREATE OR REPLACE TABLE budget_status (
    budget_id INTEGER, budget VARCHAR, scope VARCHAR, month DATE, as_of DATE,
    budget_usd DECIMAL(38, 16), spend_usd DECIMAL(38, 16), percent_used DECIMAL(18, 2),
    forecast_usd DECIMAL(38, 16), forecast_low_usd DECIMAL(38, 16),
    forecast_high_usd DECIMAL(38, 16), forecast_percent DECIMAL(18, 2),
    thresholds INTEGER[], thresholds_crossed INTEGER[], crossed_on DATE[],
    on_track_to_exceed BOOLEAN)"""
SPEND_FORECAST_DDL = """CREATE OR REPLACE TABLE spend_forecast (
    month DATE, as_of DATE, integration_id VARCHAR, model VARCHAR,
    actual_usd DECIMAL(38, 16), forecast_usd DECIMAL(38, 16), low_usd DECIMAL(38, 16),
    high_usd DECIMAL(38, 16), days_elapsed INTEGER, days_in_month INTEGER,
    baseline_days INTEGER)"""
SPEND_ANOMALIES_DDL = """CREATE OR REPLACE TABLE spend_anomalies (
    day DATE, integration_id VARCHAR, dimension VARCHAR, series VARCHAR, series_key VARCHAR,
    actual_usd DECIMAL(38, 16), expected_usd DECIMAL(38, 16), expected_low_usd DECIMAL(38, 16),
    expected_high_usd DECIMAL(38, 16), impact_usd DECIMAL(38, 16), score DECIMAL(18, 2),
    direction VARCHAR, first_seen TIMESTAMP, alert_key VARCHAR)"""


@dataclass
class SpendData:
    """Every integration's daily spend: complete days (before `today`) and today's part."""

    today: date
    known_from: dict[str, date] = field(default_factory=dict)
    series: dict[SeriesKey, Daily] = field(default_factory=lambda: defaultdict(dict))
    partial: dict[SeriesKey, Decimal] = field(default_factory=dict)


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    sql = "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?"
    return conn.execute(sql, [name]).fetchone() is not None


def load_spend(conn: duckdb.DuckDBPyConnection, today: date) -> SpendData:
    data = SpendData(today)
    if not has_table(conn, "rollup_model_daily"):
        return data
    for integration_id, first in conn.execute(
        "SELECT integration_id, min(cost_date) FROM rollup_token_type_daily GROUP BY 1"
    ).fetchall():
        data.known_from[integration_id] = first
    queries = {
        "model": f"SELECT integration_id, cost_date, coalesce(model, '{NO_MODEL}'), "
        "sum(amount_usd) FROM rollup_model_daily WHERE cost_date <= ? GROUP BY ALL",
        "token_type": "SELECT integration_id, cost_date, token_type, sum(amount_usd) "
        "FROM rollup_token_type_daily WHERE cost_date <= ? GROUP BY ALL",
    }
    for dimension, sql in queries.items():
        for integration_id, day, value, amount in conn.execute(sql, [today]).fetchall():
            keys = [SeriesKey(integration_id, dimension, value)]
            if dimension == "token_type":
                keys.append(SeriesKey(integration_id, "total", "all"))
            for key in keys:
                if day == today:
                    data.partial[key] = data.partial.get(key, Decimal(0)) + amount
                else:
                    data.series[key][day] = data.series[key].get(day, Decimal(0)) + amount
    return data


# --- forecast ------------------------------------------------------------------------------


def compute_forecasts(data: SpendData) -> list[tuple[str | None, str | None, Forecast]]:
    """(integration or None for all, model or None for all, forecast) rows."""
    rows: list[tuple[str | None, str | None, Forecast]] = []
    everything: Daily = defaultdict(Decimal)
    everything_today = Decimal(0)
    for key in sorted(data.series.keys() | data.partial.keys(), key=lambda k: k.key):
        if key.dimension == "token_type":
            continue
        daily = data.series.get(key, {})
        start = data.known_from.get(key.integration_id)
        partial = data.partial.get(key, Decimal(0))
        forecast = forecast_month(daily, data.today, history_start=start, partial_today=partial)
        model = None if key.dimension == "total" else key.value
        rows.append((key.integration_id, model, forecast))
        if key.dimension == "total":
            for day, usd in daily.items():
                everything[day] += usd
            everything_today += partial
    if data.known_from:
        start = min(data.known_from.values())
        total = forecast_month(everything, data.today, history_start=start,
                               partial_today=everything_today)  # fmt: skip
        rows.insert(0, (None, None, total))
    return rows


def write_forecasts(
    conn: duckdb.DuckDBPyConnection, rows: list[tuple[str | None, str | None, Forecast]]
) -> None:
    conn.execute(SPEND_FORECAST_DDL)
    if rows:
        conn.executemany(
            "INSERT INTO spend_forecast VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [[f.month_start, f.today, integration, model, f.actual_usd, f.forecast_usd,
              f.low_usd, f.high_usd, f.days_elapsed, f.days_in_month, f.baseline_days]
             for integration, model, f in rows],
        )  # fmt: skip


# --- anomalies -----------------------------------------------------------------------------


def compute_anomalies(data: SpendData, settings: AnomalySettings | None = None) -> list[Anomaly]:
    last_day = data.today - timedelta(days=1)
    found: list[Anomaly] = []
    for key in sorted(data.series, key=lambda k: k.key):
        known_from = data.known_from.get(key.integration_id)
        if known_from is None:
            continue
        found.extend(detect(key, data.series[key], known_from, last_day, settings))
    return sorted(found, key=lambda a: (a.day, a.series.key))


def recent(anomalies: list[Anomaly], today: date) -> list[Anomaly]:
    since = today - timedelta(days=RECENT_DAYS)
    return [a for a in anomalies if a.day >= since]


def previous_first_seen(conn: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    if not has_table(conn, "spend_anomalies"):
        return {}
    rows = conn.execute("SELECT alert_key, first_seen FROM spend_anomalies").fetchall()
    return {key: seen for key, seen in rows if seen is not None}


def write_anomalies(
    conn: duckdb.DuckDBPyConnection, anomalies: list[Anomaly], now: datetime | None = None
) -> list[Anomaly]:
    """Replace the table; each anomaly keeps the first_seen of an earlier run. Returns them
    with first_seen set."""
    seen_before = previous_first_seen(conn)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    stamped = [
        Anomaly(**{**a.__dict__, "first_seen": seen_before.get(a.key, stamp)}) for a in anomalies
    ]
    conn.execute(SPEND_ANOMALIES_DDL)
    if stamped:
        conn.executemany(
            "INSERT INTO spend_anomalies VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [[a.day, a.series.integration_id, a.series.dimension, a.series.name, a.series.key,
              a.actual_usd, a.expected_usd, a.expected_low_usd, a.expected_high_usd,
              a.impact_usd, a.score, a.direction, a.first_seen, a.key] for a in stamped],
        )  # fmt: skip
    return stamped


# --- budgets -------------------------------------------------------------------------------


def budget_daily(
    conn: duckdb.DuckDBPyConnection, budget: Budget, today: date
) -> tuple[Daily, date | None]:
    """The budget's spend per day (today's partial spend included) from fct_costs, filtered on
    its integration, provider, project and model; and the first day whose data is known."""
    where = " AND ".join(
        f"({column} = ${column} OR ${column} IS NULL)"
        for column in ("integration_id", "provider", "project_id", "model")
    )
    params = {
        "integration_id": budget.integration_id, "provider": budget.provider,
        "project_id": budget.project_id, "model": budget.model, "today": today,
    }  # fmt: skip
    rows = conn.execute(
        f"SELECT cost_date, sum(amount_usd) FROM fct_costs WHERE {where} "
        "AND cost_date <= $today GROUP BY 1",
        params,
    ).fetchall()
    (first,) = conn.execute(
        "SELECT min(cost_date) FROM fct_costs "
        "WHERE integration_id = $integration_id OR $integration_id IS NULL",
        {"integration_id": budget.integration_id},
    ).fetchone()
    return {day: usd for day, usd in rows}, first


def compute_budget_statuses(
    conn: duckdb.DuckDBPyConnection, budgets: list[Budget], today: date
) -> list[BudgetStatus]:
    if not has_table(conn, "fct_costs"):
        return []
    statuses = []
    for budget in budgets:
        daily, first = budget_daily(conn, budget, today)
        statuses.extend(budget_statuses(budget, daily, today, history_start=first))
    return statuses


def write_budget_statuses(conn: duckdb.DuckDBPyConnection, statuses: list[BudgetStatus]) -> None:
    conn.execute(BUDGET_STATUS_DDL)
    rows = []
    for s in statuses:
        low = s.forecast.low_usd if s.forecast else s.spend_usd
        high = s.forecast.high_usd if s.forecast else s.spend_usd
        rows.append(
            [s.budget.id, s.budget.name, s.budget.scope, s.month_start, s.as_of,
             s.budget.monthly_usd, s.spend_usd, s.percent_used, s.forecast_usd, low, high,
             s.forecast_percent, list(s.budget.thresholds), [t for t, _ in s.crossed],
             [d for _, d in s.crossed], s.on_track_to_exceed]
        )  # fmt: skip
    if rows:
        conn.executemany("INSERT INTO budget_status VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def current_month(statuses: list[BudgetStatus], today: date) -> list[BudgetStatus]:
    """Only this month alerts: a backfill's past months are history, not news."""
    return [s for s in statuses if s.month_start == today.replace(day=1)]


# --- digest --------------------------------------------------------------------------------


def digest_facts(conn: duckdb.DuckDBPyConnection, today: date) -> DigestFacts | None:
    """What a daily digest says about yesterday; None when there is no spend data at all."""
    if not has_table(conn, "rollup_model_daily"):
        return None
    yesterday = today - timedelta(days=1)
    month_start = yesterday.replace(day=1)
    per_model = dict(
        conn.execute(
            "SELECT coalesce(model, ?) AS m, sum(amount_usd) FILTER (WHERE cost_date = ?) "
            "- coalesce(sum(amount_usd) FILTER (WHERE cost_date = ?), 0) "
            "FROM rollup_model_daily WHERE cost_date IN (?, ?) GROUP BY m",
            [NO_MODEL, yesterday, yesterday - timedelta(days=1), yesterday,
             yesterday - timedelta(days=1)],
        ).fetchall()
    )  # fmt: skip
    (yesterday_usd, mtd) = conn.execute(
        "SELECT coalesce(sum(amount_usd) FILTER (WHERE cost_date = ?), 0), "
        "coalesce(sum(amount_usd), 0) FROM rollup_token_type_daily "
        "WHERE cost_date BETWEEN ? AND ?",
        [yesterday, month_start, yesterday],
    ).fetchone()
    forecast = None
    if has_table(conn, "spend_forecast"):
        row = conn.execute(
            "SELECT forecast_usd FROM spend_forecast WHERE integration_id IS NULL "
            "AND model IS NULL AND month = ?",
            [month_start],
        ).fetchone()
        forecast = row[0] if row else None
    budgets = []
    if has_table(conn, "budget_status"):
        budgets = conn.execute(
            "SELECT budget, budget_usd, spend_usd, forecast_usd FROM budget_status "
            "WHERE month = ? ORDER BY budget",
            [month_start],
        ).fetchall()
    anomalies = []
    if has_table(conn, "spend_anomalies"):
        anomalies = [
            f"{series} on {day}: {direction} of {usd(impact)}"
            for series, day, direction, impact in conn.execute(
                "SELECT series, day, direction, impact_usd FROM spend_anomalies "
                "WHERE day >= ? AND dimension <> 'token_type' ORDER BY abs(impact_usd) DESC "
                "LIMIT 5",
                [yesterday - timedelta(days=1)],
            ).fetchall()
        ]
    movers = sorted(
        ((m, c) for m, c in per_model.items() if c), key=lambda mc: abs(mc[1]), reverse=True
    )[:3]
    return DigestFacts(
        day=yesterday,
        yesterday_usd=yesterday_usd,
        month_to_date_usd=mtd,
        forecast_usd=forecast,
        budgets=[tuple(row) for row in budgets],
        movers=movers,
        new_anomalies=anomalies,
    )
