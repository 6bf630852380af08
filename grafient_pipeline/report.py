"""A month of spend for people: per integration, top models, token types, day by day.

Read-only queries on the warehouse's rollups (and fct_costs for which days are final). Every
amount is an exact Decimal from DuckDB; rounding is the presenter's business. No dagster here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from grafient_pipeline.plans import DateRange

TOP_MODELS = 10
PCT_PLACES = Decimal("0.0001")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


class ReportError(ValueError):
    """A report that cannot be asked for as written (the message says how to ask)."""


@dataclass(frozen=True)
class Share:
    name: str
    amount_usd: Decimal
    share_pct: Decimal  # of the report's total, 4 places; 0 when the total is 0


@dataclass(frozen=True)
class IntegrationSpend:
    integration_id: str
    label: str | None
    days: int
    amount_usd: Decimal
    share_pct: Decimal


@dataclass(frozen=True)
class DaySpend:
    cost_date: date
    amount_usd: Decimal
    is_final: bool


@dataclass(frozen=True)
class Intelligence:
    """Budget status, month-end forecast and anomalies of the month (issue 16), when the
    intelligence tables exist; each row a dict of its table's columns."""

    budgets: list[dict[str, Any]]
    forecast: list[dict[str, Any]]
    anomalies: list[dict[str, Any]]


@dataclass(frozen=True)
class MonthReport:
    month: str  # YYYY-MM
    dates: DateRange
    integration_id: str | None
    total_usd: Decimal
    integrations: list[IntegrationSpend]
    top_models: list[Share]
    other_models: int  # models beyond the top ones
    other_models_usd: Decimal
    token_types: list[Share]
    days: list[DaySpend]
    intelligence: Intelligence | None = None

    @property
    def is_empty(self) -> bool:
        return not self.days

    def as_json(self) -> dict[str, Any]:
        """Full precision: amounts as decimal strings, exactly as the warehouse holds them."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def empty_report(dates: DateRange, integration_id: str | None = None) -> MonthReport:
    """The report of a month without data (there is no warehouse yet)."""
    return MonthReport(
        month=f"{dates.start:%Y-%m}", dates=dates, integration_id=integration_id,
        total_usd=Decimal(0), integrations=[], top_models=[], other_models=0,
        other_models_usd=Decimal(0), token_types=[], days=[],
    )  # fmt: skip


def parse_month(text: str | None, today: date) -> DateRange:
    """`YYYY-MM` as the range of its days (default: the month of `today`)."""
    if text is None:
        first = today.replace(day=1)
    else:
        found = _MONTH.fullmatch(text.strip())
        if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1:
            raise ReportError(f"bad month {text!r}: use YYYY-MM, for example {today:%Y-%m}")
        first = date(int(found.group(1)), int(found.group(2)), 1)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return DateRange(first, following - timedelta(days=1))


def month_report(
    conn: duckdb.DuckDBPyConnection,
    dates: DateRange,
    integration_id: str | None = None,
    top: int = TOP_MODELS,
) -> MonthReport:
    """The report for `dates` (a calendar month), for one integration or all of them."""
    where = "cost_date BETWEEN $start AND $end AND ($integration_id IS NULL OR integration_id = $integration_id)"  # noqa: E501
    params = {"start": dates.start, "end": dates.end, "integration_id": integration_id}

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql.format(where=where), params).fetchall()

    days = [
        DaySpend(day, amount, bool(final))
        for day, amount, final in rows(
            "SELECT cost_date, sum(amount_usd), bool_and(is_final) FROM fct_costs "
            "WHERE {where} GROUP BY cost_date ORDER BY cost_date"
        )
    ]
    total = sum((d.amount_usd for d in days), Decimal(0))
    integrations = [
        IntegrationSpend(iid, label, n, amount, _pct(amount, total))
        for iid, label, n, amount in rows(
            "SELECT r.integration_id, any_value(d.label), count(DISTINCT r.cost_date), "
            "sum(r.amount_usd) AS usd FROM rollup_token_type_daily r "
            "LEFT JOIN dim_integrations d USING (integration_id) "
            "WHERE {where} GROUP BY r.integration_id ORDER BY usd DESC, r.integration_id"
        )
    ]
    models = rows(
        "SELECT model, sum(amount_usd) AS usd FROM rollup_model_daily "
        "WHERE {where} GROUP BY model ORDER BY usd DESC, model"
    )
    token_types = rows(
        "SELECT token_type, sum(amount_usd) AS usd FROM rollup_token_type_daily "
        "WHERE {where} GROUP BY token_type ORDER BY usd DESC, token_type"
    )
    rest = models[top:]
    return MonthReport(
        month=f"{dates.start:%Y-%m}",
        dates=dates,
        integration_id=integration_id,
        total_usd=total,
        integrations=integrations,
        top_models=[Share(name, usd, _pct(usd, total)) for name, usd in models[:top]],
        other_models=len(rest),
        other_models_usd=sum((usd for _, usd in rest), Decimal(0)),
        token_types=[Share(name, usd, _pct(usd, total)) for name, usd in token_types],
        days=days,
        intelligence=intelligence(conn, dates, integration_id),
    )


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    sql = "SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?"
    return conn.execute(sql, [name]).fetchone() is not None


INTELLIGENCE_SQL = {
    "budget_status": "SELECT budget, scope, budget_usd, spend_usd, percent_used, forecast_usd, "
    "forecast_percent, thresholds_crossed, crossed_on, on_track_to_exceed FROM budget_status "
    "WHERE month = $start ORDER BY budget",
    "spend_forecast": "SELECT integration_id, actual_usd, forecast_usd, low_usd, high_usd, as_of "
    "FROM spend_forecast WHERE month = $start AND model IS NULL "
    "AND ($integration_id IS NULL OR integration_id = $integration_id) "
    "ORDER BY integration_id NULLS FIRST",
    "spend_anomalies": "SELECT day, series, direction, actual_usd, expected_usd, impact_usd "
    "FROM spend_anomalies WHERE day BETWEEN $start AND $end AND dimension <> 'token_type' "
    "AND ($integration_id IS NULL OR integration_id = $integration_id) "
    "ORDER BY abs(impact_usd) DESC, day LIMIT 10",
}


def intelligence(
    conn: duckdb.DuckDBPyConnection, dates: DateRange, integration_id: str | None
) -> Intelligence | None:
    """The month's intelligence rows, or None before the intelligence assets ever ran."""
    if not any(_has_table(conn, name) for name in INTELLIGENCE_SQL):
        return None
    params = {"start": dates.start, "end": dates.end, "integration_id": integration_id}
    found: dict[str, list[dict[str, Any]]] = {}
    for table, sql in INTELLIGENCE_SQL.items():
        found[table] = []
        if _has_table(conn, table):
            cursor = conn.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
            columns = [d[0] for d in cursor.description]
            found[table] = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return Intelligence(
        budgets=found["budget_status"],
        forecast=found["spend_forecast"],
        anomalies=found["spend_anomalies"],
    )


def _pct(part: Decimal, total: Decimal) -> Decimal:
    """A share of the total in percent, to 4 places (it is a ratio, not money)."""
    return (part * 100 / total).quantize(PCT_PLACES) if total else Decimal(0)
