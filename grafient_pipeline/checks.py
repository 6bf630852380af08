"""Data-quality checks over one slice, as plain functions.

The blocking ones (``require_*``) run inside the slice's write transaction, before it commits:
a slice that fails one raises ``SliceRejected`` and is rolled back, so the four tables always
agree with each other and a failed sync leaves the previous rows as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import duckdb

from grafient_pipeline.sync import Slice, daily_totals

CURRENCY = "usd"  # every *_usd column holds US dollars, and nothing else
# (check name, upstream table, downstream table) after the raw table, in build order.
ROLLUP_RECONCILIATIONS = (
    ("reconciles_with_fct", "fct_costs", "rollup_model_daily"),
    ("reconciles_with_fct", "fct_costs", "rollup_token_type_daily"),
)


class SliceRejected(Exception):
    """A blocking check failed for a slice; its message names the check, integration and day."""

    def __init__(self, check: str, table: str, piece: Slice, day: date | None, detail: str):
        where = f" on {day.isoformat()}" if day else ""
        super().__init__(
            f"check {check} ({table}) failed for {piece.integration_id}{where}: {detail}; "
            "nothing of this sync was written"
        )
        self.check, self.table, self.day = check, table, day


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


def require_reconciled(conn: duckdb.DuckDBPyConnection, piece: Slice, raw_table: str) -> None:
    pairs = (("reconciles_with_raw", raw_table, "fct_costs"), *ROLLUP_RECONCILIATIONS)
    for check, upstream, downstream in pairs:
        mismatches = reconcile(conn, upstream, downstream, piece)
        if mismatches:
            m = mismatches[0]
            raise SliceRejected(
                check,
                downstream,
                piece,
                m.cost_date,
                f"{upstream} sums to {m.upstream_usd} USD but {downstream} to "
                f"{m.downstream_usd} USD ({len(mismatches)} day(s) differ)",
            )


def foreign_currency(
    conn: duckdb.DuckDBPyConnection, piece: Slice, raw_table: str
) -> tuple[date, str] | None:
    """The first day and currency of a result not in US dollars (codes compare case-insensitively;
    a result without a currency is not known to be in dollars)."""
    row = conn.execute(
        f"SELECT bucket_start::DATE, coalesce(currency, '(none)') FROM {raw_table} "
        "WHERE integration_id = $integration_id "
        "AND bucket_start >= $start_date::TIMESTAMP "
        "AND bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY "
        f"AND lower(currency) IS DISTINCT FROM '{CURRENCY}' ORDER BY 1, 2 LIMIT 1",
        piece.params,
    ).fetchone()
    return None if row is None else (row[0], row[1])


def require_usd(conn: duckdb.DuckDBPyConnection, piece: Slice, raw_table: str) -> None:
    found = foreign_currency(conn, piece, raw_table)
    if found is not None:
        day, currency = found
        raise SliceRejected(
            "single_currency",
            raw_table,
            piece,
            day,
            f"an amount is in {currency!r}, and Grafient records US dollars only "
            "(amount_usd is never a sum of currencies)",
        )


_SLICE = "integration_id = $integration_id AND cost_date BETWEEN $start_date AND $end_date"


def non_token_charges(
    conn: duckdb.DuckDBPyConnection, piece: Slice
) -> list[tuple[str | None, bool, Decimal]]:
    """Charges kept as token_type 'other': (line item, recognized by the parser, USD)."""
    rows = conn.execute(
        f"SELECT f.line_item, coalesce(li.recognized, false), sum(f.amount_usd) "
        f"FROM fct_costs f LEFT JOIN dim_line_items li ON li.line_item = f.line_item "
        f"WHERE {_SLICE} AND f.token_type = 'other' GROUP BY ALL ORDER BY 3 DESC, 1",
        piece.params,
    ).fetchall()
    return [(item, bool(known), Decimal(total)) for item, known, total in rows]


def negative_amounts(conn: duckdb.DuckDBPyConnection, piece: Slice) -> int:
    (count,) = conn.execute(
        f"SELECT count(*) FROM fct_costs WHERE {_SLICE} AND amount_usd < 0", piece.params
    ).fetchone()
    return int(count)
