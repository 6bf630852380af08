"""The warehouse's schema: created whole for a new file, upgraded in place for an existing one.

`dbt_like_sql/schema.sql` always describes the newest shape. A new warehouse is created from it
and every migration is recorded as applied; an existing one runs the migrations it has not
applied yet, in order, in one transaction (all or nothing), and records each in
`schema_migrations`. A migration never loses a row: it rebuilds what derives from the raw
tables, never the raw rows themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from grafient_pipeline.lake import is_lake_connection
from grafient_pipeline.providers.openai.dim_line_items import insert_line_items
from grafient_pipeline.warehouse import (
    ROLLUP_MODELS,
    SCHEMA_MODELS,
    TABLE_MODELS,
    VIEW_MODELS,
    for_lake,
    load_models,
    retry_on_conflict,
    run_models,
    transaction,
)

_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
    "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


def _compress_raw_json(conn: duckdb.DuckDBPyConnection) -> None:
    """raw_json zstd-compressed: DuckDB cannot change a column's compression in place, so the
    table is rebuilt, same rows."""
    (ddl,) = conn.execute(
        "SELECT sql FROM duckdb_tables() "
        "WHERE schema_name = 'main' AND table_name = 'raw_openai_costs'"
    ).fetchone()
    if "COMPRESSION ZSTD" in ddl.upper():
        return
    conn.execute("ALTER TABLE raw_openai_costs RENAME TO raw_openai_costs_before_zstd")
    run_models(conn, ["schema_openai"], {})
    conn.execute("INSERT INTO raw_openai_costs SELECT * FROM raw_openai_costs_before_zstd")
    conn.execute("DROP TABLE raw_openai_costs_before_zstd")


def _providers_and_line_items(conn: duckdb.DuckDBPyConnection) -> None:
    """Providers: the rollups carry theirs (every integration so far was OpenAI's), and
    dim_projects / dim_api_keys are new tables (the schema creates them). The line-item parser
    learned tiers, token words, modalities and charge names: every line item is parsed again,
    then fct_costs and the rollups are rebuilt from the raw rows."""
    for table in ("rollup_model_daily", "rollup_token_type_daily"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS provider VARCHAR")
    conn.execute(
        "ALTER TABLE dim_line_items ADD COLUMN IF NOT EXISTS recognized BOOLEAN DEFAULT true"
    )
    conn.execute("ALTER TABLE dim_line_items ADD COLUMN IF NOT EXISTS charge VARCHAR")
    conn.execute("DELETE FROM dim_line_items")
    texts = conn.execute(
        "SELECT DISTINCT line_item FROM raw_openai_costs WHERE line_item IS NOT NULL"
    ).fetchall()
    insert_line_items(conn, [text for (text,) in texts])
    rebuild_marts(conn)


def rebuild_marts(conn: duckdb.DuckDBPyConnection) -> None:
    """fct_costs and the rollups again from the raw rows, every integration and day."""
    today = datetime.now(UTC).date()
    ranges = conn.execute(
        "SELECT integration_id, min(bucket_start)::DATE, max(bucket_start)::DATE "
        "FROM raw_openai_costs GROUP BY 1 ORDER BY 1"
    ).fetchall()
    for integration_id, start, end in ranges:
        params = {
            "integration_id": integration_id,
            "start_date": start,
            "end_date": end,
            "today": today,
        }
        run_models(conn, ["fct_costs_openai", *ROLLUP_MODELS], params)


MIGRATIONS = (
    Migration(1, "raw_json compressed with zstd", _compress_raw_json),
    Migration(
        2,
        "providers on the rollups, dim_projects, dim_api_keys; line items re-parsed",
        _providers_and_line_items,
    ),
)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create what is missing and apply pending migrations; cheap when all is current."""
    lake = is_lake_connection(conn)
    if _applied(conn) == {m.number for m in MIGRATIONS}:
        if not lake:
            run_models(conn, list(SCHEMA_MODELS), {})  # the views, refreshed
            return
        run_models(conn, list(TABLE_MODELS), {})  # this connection's macro
        if _stale_lake_views(conn):
            retry_on_conflict(lambda: _in_transaction(conn, _refresh_lake_views))
        return
    retry_on_conflict(lambda: _in_transaction(conn, lambda c: _migrate(c, lake)))


def _in_transaction(
    conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], None]
) -> None:
    with transaction(conn):
        work(conn)


def _migrate(conn: duckdb.DuckDBPyConnection, lake: bool) -> None:
    fresh = not _has_table(conn, "raw_openai_costs")
    conn.execute(for_lake(_MIGRATIONS_DDL) if lake else _MIGRATIONS_DDL)
    applied = _applied(conn)
    run_models(conn, list(TABLE_MODELS), {})  # tables that do not exist yet, newest shape
    for migration in MIGRATIONS:
        if migration.number in applied:
            continue
        if not fresh:
            migration.apply(conn)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            [migration.number, migration.name, datetime.now(UTC).replace(tzinfo=None)],
        )
    if lake:
        _refresh_lake_views(conn)
    else:
        run_models(conn, list(SCHEMA_MODELS), {})


# On DuckLake, replacing a view is a catalog write that conflicts with every other writer's
# commit: each view carries the digest of its model as its comment and is replaced only when the
# model changed.
def _view_digest(name: str) -> str:
    text = "\n".join(load_models()[name].statements)
    return "grafient:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _stale_lake_views(conn: duckdb.DuckDBPyConnection) -> list[str]:
    current = dict(
        conn.execute(
            "SELECT view_name, comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal"
        ).fetchall()
    )
    return [name for name in VIEW_MODELS if current.get(name) != _view_digest(name)]


def _refresh_lake_views(conn: duckdb.DuckDBPyConnection) -> None:
    for name in _stale_lake_views(conn):
        run_models(conn, [name], {})
        conn.execute(f"COMMENT ON VIEW {name} IS '{_view_digest(name)}'")


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [name],
    ).fetchone()
    return row is not None


def _applied(conn: duckdb.DuckDBPyConnection) -> set[int]:
    if not _has_table(conn, "schema_migrations"):
        return set()
    return {v for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}
