"""The dashboard's figures, read from a snapshot: exact Decimals from DuckDB, no rounding here.

Every total is the same SUM the warehouse views compute (v_month_to_date over
rollup_model_daily, v_daily_costs over fct_costs), so the page equals `grafient sql` to the
cent once both are rounded the same way. Presentation (rounding, charts) is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import duckdb

RANGES = (30, 90, 180)
TOP = 10
CHART_MODELS = 8  # models drawn on their own; the rest stack as "other models"
TOKEN_TYPES = ("input", "output", "cached_input", "cache_write", "other")
TOKEN_TYPE_NAMES = {
    "input": "Input",
    "output": "Output",
    "cached_input": "Cached input",
    "cache_write": "Cache writes",
    "other": "Other",
}
OTHER_MODELS = "other models"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Filters:
    today: date
    days: int = 30
    integration: str | None = None
    provider: str | None = None

    @property
    def start(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def month_start(self) -> date:
        return self.today.replace(day=1)


@dataclass(frozen=True)
class Series:
    name: str
    amounts: list[Decimal]

    @property
    def total(self) -> Decimal:
        return sum(self.amounts, ZERO)


@dataclass(frozen=True)
class DailyChart:
    days: list[date]
    series: list[Series]

    @property
    def totals(self) -> list[Decimal]:
        return [sum((s.amounts[i] for s in self.series), ZERO) for i in range(len(self.days))]

    @property
    def total(self) -> Decimal:
        return sum(self.totals, ZERO)


@dataclass(frozen=True)
class Ranked:
    key: str
    name: str
    detail: str  # second line: integration, project, key hint
    amount_usd: Decimal
    share_pct: Decimal


@dataclass(frozen=True)
class IntegrationOption:
    integration_id: str
    label: str
    provider: str


@dataclass(frozen=True)
class Optional_:
    """A table another part of the pipeline builds; absent means "not computed yet"."""

    name: str
    present: bool
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def pick(self, *candidates: str) -> str | None:
        return next((c for c in candidates if c in self.columns), None)

    def values(self, column: str) -> list[Any]:
        index = self.columns.index(column)
        return [row[index] for row in self.rows]


def _scope(filters: Filters, prefix: str = "") -> tuple[str, dict[str, Any]]:
    parts, params = ["true"], {}
    if filters.integration:
        parts.append(f"{prefix}integration_id = $integration")
        params["integration"] = filters.integration
    if filters.provider:
        parts.append(
            f"{prefix}integration_id IN "
            "(SELECT integration_id FROM dim_integrations WHERE provider = $provider)"
        )
        params["provider"] = filters.provider
    return " AND ".join(parts), params


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, filters: Filters, **extra: Any) -> list:
    where, params = _scope(filters)
    return conn.execute(sql.format(where=where), {**params, **extra}).fetchall()


def month_to_date(conn: duckdb.DuckDBPyConnection, filters: Filters) -> Decimal:
    """= sum(amount_usd) of v_month_to_date (no upper bound, as the view)."""
    (total,) = _rows(
        conn,
        "SELECT coalesce(sum(amount_usd), 0) FROM rollup_model_daily "
        "WHERE cost_date >= $month_start AND {where}",
        filters,
        month_start=filters.month_start,
    )[0]
    return Decimal(total)


def day_total(conn: duckdb.DuckDBPyConnection, filters: Filters, day: date) -> tuple[Decimal, bool]:
    """(spend, final) of one day, as v_daily_costs says; (0, False) for a day without rows."""
    total, final = _rows(
        conn,
        "SELECT coalesce(sum(amount_usd), 0), coalesce(bool_and(is_final), false) "
        "FROM daily_costs WHERE cost_date = $day AND {where}",
        filters,
        day=day,
    )[0]
    return Decimal(total), bool(final)


def _days(filters: Filters) -> list[date]:
    return [filters.start + timedelta(days=n) for n in range(filters.days)]


def daily_by_model(conn: duckdb.DuckDBPyConnection, filters: Filters) -> DailyChart:
    rows = _rows(
        conn,
        "SELECT cost_date, model, sum(amount_usd) FROM rollup_model_daily "
        "WHERE cost_date BETWEEN $start AND $end AND {where} GROUP BY ALL",
        filters,
        start=filters.start,
        end=filters.today,
    )
    totals: dict[str, Decimal] = {}
    for _, model, amount in rows:
        totals[model] = totals.get(model, ZERO) + amount
    ranked = sorted(totals, key=lambda m: (-totals[m], m))
    shown = ranked[:CHART_MODELS] if len(ranked) > CHART_MODELS + 1 else ranked
    names = [*shown, OTHER_MODELS] if len(shown) < len(ranked) else shown
    return _chart(filters, names, [(d, m if m in shown else OTHER_MODELS, a) for d, m, a in rows])


def daily_by_token_type(conn: duckdb.DuckDBPyConnection, filters: Filters) -> DailyChart:
    rows = _rows(
        conn,
        "SELECT cost_date, token_type, sum(amount_usd) FROM rollup_token_type_daily "
        "WHERE cost_date BETWEEN $start AND $end AND {where} GROUP BY ALL",
        filters,
        start=filters.start,
        end=filters.today,
    )
    present = {t for _, t, _ in rows}
    names = [t for t in TOKEN_TYPES if t in present] + sorted(present - set(TOKEN_TYPES))
    chart = _chart(filters, names, rows)
    return DailyChart(
        chart.days, [Series(TOKEN_TYPE_NAMES.get(s.name, s.name), s.amounts) for s in chart.series]
    )


def _chart(filters: Filters, names: list[str], rows: list[tuple[date, str, Decimal]]) -> DailyChart:
    days = _days(filters)
    index = {day: n for n, day in enumerate(days)}
    amounts = {name: [ZERO] * len(days) for name in names}
    for day, name, amount in rows:
        amounts[name][index[day]] += amount
    return DailyChart(days, [Series(name, amounts[name]) for name in names])


def _share(part: Decimal, total: Decimal) -> Decimal:
    return (part * 100 / total).quantize(Decimal("0.1")) if total else ZERO


def top_models(conn: duckdb.DuckDBPyConnection, filters: Filters, total: Decimal) -> list[Ranked]:
    rows = _rows(
        conn,
        "SELECT model, sum(amount_usd) AS usd FROM rollup_model_daily "
        "WHERE cost_date BETWEEN $start AND $end AND {where} "
        f"GROUP BY model ORDER BY usd DESC, model LIMIT {TOP}",
        filters,
        start=filters.start,
        end=filters.today,
    )
    return [Ranked(model, model, "", usd, _share(usd, total)) for model, usd in rows]


def top_projects(
    conn: duckdb.DuckDBPyConnection, filters: Filters, total: Decimal, tables: frozenset[str]
) -> list[Ranked]:
    named = "dim_projects" in tables
    name = "any_value(p.name)" if named else "NULL"
    join = (
        "LEFT JOIN dim_projects p ON p.integration_id = f.integration_id "
        "AND p.project_id = f.project_id"
        if named
        else ""
    )
    where, params = _scope(filters, "f.")
    rows = conn.execute(
        f"SELECT f.integration_id, f.project_id, {name}, sum(f.amount_usd) AS usd "
        f"FROM project_daily f {join} WHERE f.cost_date BETWEEN $start AND $end AND {where} "
        f"GROUP BY ALL ORDER BY usd DESC, f.project_id LIMIT {TOP}",
        {**params, "start": filters.start, "end": filters.today},
    ).fetchall()
    return [
        Ranked(
            project or "",
            label or project or "(no project)",
            f"{integration} · {project}" if label and project else integration,
            usd,
            _share(usd, total),
        )
        for integration, project, label, usd in rows
    ]


def top_api_keys(
    conn: duckdb.DuckDBPyConnection, filters: Filters, total: Decimal, tables: frozenset[str]
) -> list[Ranked]:
    named = "dim_api_keys" in tables
    name = "any_value(k.name), any_value(k.redacted_value)" if named else "NULL, NULL"
    join = (
        "LEFT JOIN dim_api_keys k ON k.integration_id = f.integration_id "
        "AND k.api_key_id = f.api_key_id"
        if named
        else ""
    )
    where, params = _scope(filters, "f.")
    rows = conn.execute(
        f"SELECT f.integration_id, f.api_key_id, {name}, sum(f.amount_usd) AS usd "
        f"FROM api_key_daily f {join} WHERE f.cost_date BETWEEN $start AND $end AND {where} "
        f"GROUP BY ALL ORDER BY usd DESC, f.api_key_id LIMIT {TOP}",
        {**params, "start": filters.start, "end": filters.today},
    ).fetchall()
    ranked = []
    for integration, key_id, label, redacted, usd in rows:
        shown = redacted or (key_id if label else None)  # the id is already the name otherwise
        detail = " · ".join(part for part in (integration, shown) if part)
        ranked.append(
            Ranked(key_id or "", label or key_id or "(no key)", detail, usd, _share(usd, total))
        )
    return ranked


def integration_options(conn: duckdb.DuckDBPyConnection) -> list[IntegrationOption]:
    rows = conn.execute(
        "SELECT integration_id, label, provider FROM dim_integrations "
        "WHERE status <> 'removed' OR integration_id IN (SELECT integration_id FROM daily_costs) "
        "ORDER BY lower(label), integration_id"
    ).fetchall()
    return [IntegrationOption(*row) for row in rows]


def optional_table(
    conn: duckdb.DuckDBPyConnection, name: str, tables: frozenset[str], filters: Filters
) -> Optional_:
    """Rows of an intelligence table when it exists, scoped to the filters it has columns for."""
    if name not in tables:
        return Optional_(name, present=False)
    columns = [
        c
        for (c,) in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
            [name],
        ).fetchall()
    ]
    where, params = _scope(filters) if "integration_id" in columns else ("true", {})
    order = next((c for c in ("day", "cost_date", "date", "first_seen") if c in columns), None)
    order_by = f"ORDER BY {order} DESC" if order else ""
    rows = conn.execute(f"SELECT * FROM {name} WHERE {where} {order_by} LIMIT 200", params)
    return Optional_(name, True, columns, rows.fetchall())
