"""Data-quality checks over one slice, as plain functions returning their findings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import duckdb

from grafient_pipeline.sync import Slice, daily_totals


@dataclass(frozen=True)
class Mismatch:
    cost_date: date
    upstream_usd: Decimal
    downstream_usd: Decimal


def reconcile(
    conn: duckdb.DuckDBPyConnection, upstream: str, downstream: str, piece: Slice
) -> list[Mismatch]:
    """Days where two tables' totals differ, to the last decimal."""
    up = daily_totals(conn, upstream, piece)
    down = daily_totals(conn, downstream, piece)
    zero = Decimal(0)
    return [
        Mismatch(day, up.get(day, zero), down.get(day, zero))
        for day in sorted(up.keys() | down.keys())
        if up.get(day, zero) != down.get(day, zero)
    ]


_SLICE = "integration_id = $integration_id AND cost_date BETWEEN $start_date AND $end_date"


def non_token_line_items(
    conn: duckdb.DuckDBPyConnection, piece: Slice
) -> list[tuple[str | None, Decimal]]:
    """Line items the parser did not read as tokens (kept as token_type 'other')."""
    rows = conn.execute(
        f"SELECT line_item, sum(amount_usd) FROM fct_costs WHERE {_SLICE} "
        "AND token_type = 'other' GROUP BY line_item ORDER BY 2 DESC, 1",
        piece.params,
    ).fetchall()
    return [(item, Decimal(total)) for item, total in rows]


def currencies(conn: duckdb.DuckDBPyConnection, piece: Slice) -> list[str | None]:
    rows = conn.execute(
        "SELECT DISTINCT currency FROM raw_openai_costs WHERE integration_id = $integration_id "
        "AND bucket_start::DATE BETWEEN $start_date AND $end_date ORDER BY 1",
        piece.params,
    ).fetchall()
    return [currency for (currency,) in rows]


def negative_amounts(conn: duckdb.DuckDBPyConnection, piece: Slice) -> int:
    (count,) = conn.execute(
        f"SELECT count(*) FROM fct_costs WHERE {_SLICE} AND amount_usd < 0", piece.params
    ).fetchone()
    return int(count)
