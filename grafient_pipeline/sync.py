"""The sync steps the assets run, as plain functions (no Dagster).

A sync works on slices: one integration and a contiguous range of UTC dates. Fetching streams
the API's buckets into a staging CSV on disk (memory stays bounded and no DuckDB connection is
held across HTTP); loading then replaces the slice in one DuckDB transaction.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

from grafient_pipeline.openai.costs_page import CostBucket
from grafient_pipeline.openai.line_items import parse_line_item
from grafient_pipeline.plans import DateRange
from grafient_pipeline.warehouse import run_models, transaction

STAGING_COLUMNS = (
    "bucket_start",
    "bucket_end",
    "line_item",
    "project_id",
    "api_key_id",
    "amount_value",
    "currency",
    "quantity",
    "quantity_unit",
    "raw_json",
)


@dataclass(frozen=True)
class Slice:
    integration_id: str
    dates: DateRange

    @property
    def params(self) -> dict[str, object]:
        return {
            "integration_id": self.integration_id,
            "start_date": self.dates.start,
            "end_date": self.dates.end,
        }

    def __str__(self) -> str:
        return f"{self.integration_id} {self.dates}"


@dataclass(frozen=True)
class StagedFetch:
    path: Path
    rows: int
    buckets: int


def utc_today() -> date:
    return datetime.now(UTC).date()


def slices_from_keys(keys: Iterable[tuple[str, date]]) -> list[Slice]:
    """Group (integration, date) pairs into contiguous date ranges per integration."""
    by_integration: dict[str, set[date]] = defaultdict(set)
    for integration_id, day in keys:
        by_integration[integration_id].add(day)
    slices: list[Slice] = []
    for integration_id in sorted(by_integration):
        days = sorted(by_integration[integration_id])
        start = previous = days[0]
        for day in days[1:]:
            if day != previous + timedelta(days=1):
                slices.append(Slice(integration_id, DateRange(start, previous)))
                start = day
            previous = day
        slices.append(Slice(integration_id, DateRange(start, previous)))
    return slices


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def stage_buckets(buckets: Iterable[CostBucket], path: Path) -> StagedFetch:
    """Write every result of every bucket to a CSV file, amounts as exact decimal text."""
    rows = bucket_count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(STAGING_COLUMNS)
        for bucket in buckets:
            bucket_count += 1
            start, end = bucket.start_time, bucket.end_time
            writer.writerows(
                (
                    start,
                    end,
                    r.line_item,
                    r.project_id,
                    r.api_key_id,
                    format(r.amount, "f"),
                    r.currency,
                    _text(r.quantity),
                    r.quantity_unit,
                    r.raw_json,
                )
                for r in bucket.results
            )
            rows += len(bucket.results)
    return StagedFetch(path, rows, bucket_count)


def staging_path(staging_dir: Path, run_id: str, piece: Slice) -> Path:
    return staging_dir / f"{run_id}-{piece.integration_id}-{piece.dates.start}.csv"


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def load_raw(
    conn: duckdb.DuckDBPyConnection, piece: Slice, staged: StagedFetch, run_id: str
) -> None:
    params = {
        **piece.params,
        "staging_path": str(staged.path),
        "run_id": run_id,
        "fetched_at": datetime.now(UTC).replace(tzinfo=None),
    }
    with transaction(conn):
        run_models(conn, ["raw_openai_costs"], params)


def _register_line_items(conn: duckdb.DuckDBPyConnection, piece: Slice) -> None:
    """Parse (in Python, one parser for the whole project) the slice's new line items."""
    new_items = conn.execute(
        """
        SELECT DISTINCT r.line_item FROM raw_openai_costs r
        WHERE r.integration_id = $integration_id
          AND r.bucket_start >= $start_date::TIMESTAMP
          AND r.bucket_start < $end_date::TIMESTAMP + INTERVAL 1 DAY
          AND r.line_item IS NOT NULL
          AND r.line_item NOT IN (SELECT line_item FROM dim_line_items)
        """,
        piece.params,
    ).fetchall()
    rows = []
    for (text,) in new_items:
        item = parse_line_item(text)
        rows.append(
            (text, item.model, item.token_type, item.service_tier, item.modality, item.long_context)
        )
    if rows:
        conn.executemany("INSERT INTO dim_line_items VALUES (?, ?, ?, ?, ?, ?)", rows)


def build_fct_costs(conn: duckdb.DuckDBPyConnection, piece: Slice, today: date) -> None:
    with transaction(conn):
        _register_line_items(conn, piece)
        run_models(conn, ["fct_costs"], {**piece.params, "today": today})


def build_rollup(conn: duckdb.DuckDBPyConnection, model: str, piece: Slice) -> None:
    with transaction(conn):
        run_models(conn, [model], piece.params)


@dataclass(frozen=True)
class IntegrationRow:
    integration_id: str
    label: str
    provider: str
    plan: str
    organization_id: str | None
    status: str
    last_synced_at: datetime | None


def refresh_dim_integrations(
    conn: duckdb.DuckDBPyConnection, integrations: list[IntegrationRow]
) -> None:
    """Mirror the registry (no secrets): small, so replaced whole."""
    with transaction(conn):
        conn.execute("DELETE FROM dim_integrations")
        if integrations:
            conn.executemany(
                "INSERT INTO dim_integrations VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.integration_id,
                        i.label,
                        i.provider,
                        i.plan,
                        i.organization_id,
                        i.status,
                        None if i.last_synced_at is None else i.last_synced_at.replace(tzinfo=None),
                    )
                    for i in integrations
                ],
            )


_DATE_COLUMN = {
    "raw_openai_costs": "bucket_start::DATE",
    "fct_costs": "cost_date",
    "rollup_model_daily": "cost_date",
    "rollup_token_type_daily": "cost_date",
}
_AMOUNT_COLUMN = {"raw_openai_costs": "amount_value"}


def slice_totals(conn: duckdb.DuckDBPyConnection, table: str, piece: Slice) -> tuple[int, Decimal]:
    """Row count and exact total of a table's slice."""
    day = _DATE_COLUMN[table]
    amount = _AMOUNT_COLUMN.get(table, "amount_usd")
    count, total = conn.execute(
        f"SELECT count(*), coalesce(sum({amount}), 0) FROM {table} "
        f"WHERE integration_id = $integration_id AND {day} BETWEEN $start_date AND $end_date",
        piece.params,
    ).fetchone()
    return int(count), Decimal(total)


def daily_totals(conn: duckdb.DuckDBPyConnection, table: str, piece: Slice) -> dict[date, Decimal]:
    day = _DATE_COLUMN[table]
    amount = _AMOUNT_COLUMN.get(table, "amount_usd")
    rows = conn.execute(
        f"SELECT {day} AS d, sum({amount}) FROM {table} "
        f"WHERE integration_id = $integration_id AND {day} BETWEEN $start_date AND $end_date "
        "GROUP BY d",
        piece.params,
    ).fetchall()
    return {d: Decimal(total) for d, total in rows}
