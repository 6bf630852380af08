"""What the Dashboard shows, built from one snapshot generation, and its JSON form for /api/.

A snapshot never changes once published, so a built view is kept per (generation, filters):
twenty people looking at the same page cost one set of queries per sync.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from grafient_pipeline.dashboard import charts, figures
from grafient_pipeline.dashboard.figures import DailyChart, Filters, Optional_, Ranked
from grafient_pipeline.dashboard.reader import Generation

CACHE_SIZE = 128
INTELLIGENCE = ("spend_forecast", "budget_status", "spend_anomalies")


@dataclass(frozen=True)
class Headline:
    month: str  # YYYY-MM
    month_to_date_usd: Decimal
    yesterday: date
    yesterday_usd: Decimal
    yesterday_final: bool
    forecast_usd: Decimal | None  # from spend_forecast, when computed
    forecast_low_usd: Decimal | None
    forecast_high_usd: Decimal | None


@dataclass(frozen=True)
class Budget:
    name: str
    spent_usd: Decimal | None
    limit_usd: Decimal | None
    percent: Decimal | None
    state: str


@dataclass(frozen=True)
class Anomaly:
    day: str
    series: str
    actual_usd: Decimal | None
    expected_usd: Decimal | None
    impact_usd: Decimal | None
    direction: str


@dataclass(frozen=True)
class DashboardView:
    filters: Filters
    published_at: datetime | None
    last_synced_at: datetime | None
    headline: Headline
    by_model: DailyChart
    by_token_type: DailyChart
    by_model_svg: str
    by_token_type_svg: str
    top_models: list[Ranked]
    top_projects: list[Ranked]
    top_api_keys: list[Ranked]
    budgets: list[Budget] | None  # None: budget_status not computed yet
    anomalies: list[Anomaly] | None  # None: spend_anomalies not computed yet
    integrations: list[figures.IntegrationOption]
    providers: list[str]
    names_known: dict[str, bool] = field(default_factory=dict)


def build(
    conn: duckdb.DuckDBPyConnection, generation: Generation, filters: Filters
) -> DashboardView:
    tables = generation.tables
    yesterday = filters.today - timedelta(days=1)
    by_model = figures.daily_by_model(conn, filters)
    by_token_type = figures.daily_by_token_type(conn, filters)
    total = by_model.total
    optional = {name: figures.optional_table(conn, name, tables, filters) for name in INTELLIGENCE}
    options = figures.integration_options(conn)
    yesterday_usd, yesterday_final = figures.day_total(conn, filters, yesterday)
    forecast = _forecast(optional["spend_forecast"], filters)
    info = generation.info
    return DashboardView(
        filters=filters,
        published_at=info.published_at if info else None,
        last_synced_at=info.last_synced_at if info else None,
        headline=Headline(
            f"{filters.today:%Y-%m}",
            figures.month_to_date(conn, filters),
            yesterday,
            yesterday_usd,
            yesterday_final,
            *forecast,
        ),
        by_model=by_model,
        by_token_type=by_token_type,
        by_model_svg=charts.stacked_bars(by_model, "Daily spend by model"),
        by_token_type_svg=charts.stacked_bars(by_token_type, "Daily spend by token type"),
        top_models=figures.top_models(conn, filters, total),
        top_projects=figures.top_projects(conn, filters, total, tables),
        top_api_keys=figures.top_api_keys(conn, filters, total, tables),
        budgets=_budgets(optional["budget_status"], filters),
        anomalies=_anomalies(optional["spend_anomalies"]),
        integrations=options,
        providers=sorted({o.provider for o in options}),
        names_known={
            "projects": "dim_projects" in tables,
            "api_keys": "dim_api_keys" in tables,
        },
    )


# --- the intelligence tables: read by the column names they have (another part builds them) ---


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def _this_month(table: Optional_, filters: Filters) -> list[tuple[Any, ...]]:
    column = table.pick("month", "month_start", "period")
    if column is None:
        return table.rows
    index = table.columns.index(column)
    wanted = (f"{filters.today:%Y-%m}", filters.month_start)
    return [row for row in table.rows if row[index] in wanted or str(row[index])[:7] == wanted[0]]


def _forecast(table: Optional_, filters: Filters) -> tuple[Decimal | None, ...]:
    value = table.pick("forecast_usd", "month_end_forecast_usd", "forecast", "projected_usd")
    if not table.present or value is None:
        return None, None, None
    rows = _this_month(table, filters)
    series = table.pick("series", "scope", "level")
    if series is not None and not filters.integration:  # prefer the all-integrations row
        index = table.columns.index(series)
        totals = [r for r in rows if str(r[index]).lower() in {"total", "all", "*", "overall"}]
        rows = totals or rows
    if not rows:
        return None, None, None
    low = table.pick("low_usd", "forecast_low_usd", "low")
    high = table.pick("high_usd", "forecast_high_usd", "high")

    def total(column: str | None) -> Decimal | None:
        if column is None:
            return None
        index = table.columns.index(column)
        values = [_decimal(r[index]) for r in rows]
        return sum((v for v in values if v is not None), Decimal(0))

    return total(value), total(low), total(high)


def _budgets(table: Optional_, filters: Filters) -> list[Budget] | None:
    if not table.present:
        return None
    name = table.pick("budget_name", "name", "budget")
    spent = table.pick("spend_usd", "spent_usd", "spend_to_date_usd", "actual_usd")
    limit = table.pick("monthly_usd", "budget_usd", "limit_usd", "amount_usd")
    percent = table.pick("percent_used", "pct_used", "used_pct", "percent")
    state = table.pick("status", "state", "on_track")

    def cell(row: tuple[Any, ...], column: str | None) -> Any:
        return row[table.columns.index(column)] if column else None

    return [
        Budget(
            str(cell(row, name) or "budget"),
            _decimal(cell(row, spent)),
            _decimal(cell(row, limit)),
            _decimal(cell(row, percent)),
            str(cell(row, state) if cell(row, state) is not None else ""),
        )
        for row in _this_month(table, filters)[:10]
    ]


def _anomalies(table: Optional_) -> list[Anomaly] | None:
    if not table.present:
        return None
    day = table.pick("day", "cost_date", "date")
    series = table.pick("series", "model", "integration_id")
    actual = table.pick("actual_usd", "actual")
    expected = table.pick("expected_usd", "expected")
    impact = table.pick("impact_usd", "impact")
    direction = table.pick("direction")

    def cell(row: tuple[Any, ...], column: str | None) -> Any:
        return row[table.columns.index(column)] if column else None

    return [
        Anomaly(
            str(cell(row, day) or ""),
            str(cell(row, series) or ""),
            _decimal(cell(row, actual)),
            _decimal(cell(row, expected)),
            _decimal(cell(row, impact)),
            str(cell(row, direction) or ""),
        )
        for row in table.rows[:10]
    ]


# --- cache ---------------------------------------------------------------------------------


class ViewCache:
    """Built views per filters, for the newest snapshot generation.

    When a new snapshot appears, the first request for some filters starts rebuilding them in
    the background and everyone keeps getting the previous generation's view until it is
    ready: a sync never makes pages slow (the page's "data as of" says which one it shows).
    Only filters never built before are built while the request waits (one builder per key).
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._items: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()  # key -> (version, view)
        self._building: set[Any] = set()
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self._size = size

    def latest(self, key: Any, version: Any, build: Callable[[], tuple[Any, Any]]) -> Any:
        """`build()` returns (version, view) for the snapshot it found."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
                if entry[0] != version and key not in self._building:
                    self._building.add(key)
                    threading.Thread(target=self._refresh, args=(key, build), daemon=True).start()
                return entry[1]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._items:
                    return self._items[key][1]
            self._store(key, build())
            return self._items[key][1]

    def _refresh(self, key: Any, build: Callable[[], tuple[Any, Any]]) -> None:
        try:
            self._store(key, build())
        finally:
            with self._lock:
                self._building.discard(key)

    def _store(self, key: Any, built: tuple[Any, Any]) -> None:
        with self._lock:
            self._items[key] = built
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


# --- JSON (every amount a decimal string, exactly as the snapshot holds it) ------------------


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")  # 0E-16 -> 0.0000000000000000: plain decimal text
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, date):
        return value.isoformat()
    return value


def chart_json(chart: DailyChart) -> dict[str, Any]:
    return jsonable(
        {
            "days": chart.days,
            "totals": chart.totals,
            "series": [{"name": s.name, "amounts_usd": s.amounts} for s in chart.series],
        }
    )


def ranked_json(items: list[Ranked]) -> list[dict[str, Any]]:
    return jsonable(
        [
            {"id": r.key, "name": r.name, "detail": r.detail, "amount_usd": r.amount_usd,
             "share_pct": r.share_pct}
            for r in items
        ]
    )  # fmt: skip
