"""A read-only copy of the marts for readers that must never wait for a writer (the dashboard).

DuckDB lets one process write a file, and while it writes nobody else may even open it. So after
each successful sync the pipeline publishes the marts, the dims and small pre-aggregates of
fct_costs into a separate DuckDB file: written under a temporary name next to it, then swapped
in with os.replace (atomic on one filesystem). A reader that has the old file open keeps reading
it; the next open sees the new one. The snapshot records when it was made (`snapshot_info`).

No dagster here: the cost asset calls `publish_snapshot(conn, settings.snapshot_path)` after its
commit (with its own connection), the dashboard calls it with the warehouse's path at start-up.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from grafient_pipeline.settings import LAKE_PREFIX
from grafient_pipeline.warehouse import connect

SNAPSHOT_VERSION = 1
SOURCE = "grafient_source"
TARGET = "grafient_snapshot"

# Copied whole: small tables (the rollups hold a row per integration, day and model at most).
COPIED = ("dim_integrations", "rollup_model_daily", "rollup_token_type_daily")
# Copied whole when they exist (built by other assets; a new warehouse may not have them yet).
OPTIONAL = ("dim_projects", "dim_api_keys", "budget_status", "spend_forecast", "spend_anomalies")
# fct_costs itself is too big to copy after every sync: these are the questions asked of it.
AGGREGATES = {
    # = v_daily_costs
    "daily_costs": "SELECT integration_id, cost_date, sum(amount_usd) AS amount_usd, "
    "bool_and(is_final) AS is_final, provider FROM {src}.fct_costs GROUP BY ALL",
    "project_daily": "SELECT integration_id, cost_date, project_id, sum(amount_usd) AS amount_usd "
    "FROM {src}.fct_costs GROUP BY ALL",
    "api_key_daily": "SELECT integration_id, cost_date, api_key_id, any_value(project_id) AS "
    "project_id, sum(amount_usd) AS amount_usd FROM {src}.fct_costs GROUP BY ALL",
}


class SnapshotError(RuntimeError):
    """The snapshot could not be published (the message says what to do)."""


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    published_at: datetime  # UTC, naive in the file
    last_synced_at: datetime | None  # the newest sync of any integration in it
    fct_rows: int
    tables: tuple[str, ...]


def publish_snapshot(
    warehouse: str | Path | duckdb.DuckDBPyConnection, snapshot_path: str | Path
) -> SnapshotInfo:
    """Copy the marts of `warehouse` (a path, or an open connection outside any transaction)
    into `snapshot_path`, atomically replacing what was there."""
    target = Path(snapshot_path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(warehouse, duckdb.DuckDBPyConnection):
            info = _publish_from_connection(warehouse, temp)
        elif str(warehouse).startswith(LAKE_PREFIX):  # a lake has no lock: read it directly
            with connect(str(warehouse), read_only=True) as conn:
                info = _publish_from_connection(conn, temp)
        else:
            info = _publish_from_path(str(warehouse), temp)
        os.replace(temp, target)
    finally:
        for leftover in (temp, temp.with_name(temp.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return SnapshotInfo(target, *info[1:])


def _publish_from_connection(conn: duckdb.DuckDBPyConnection, temp: Path) -> tuple:
    (source,) = conn.execute("SELECT current_database()").fetchone()
    conn.execute(f"ATTACH '{_quoted(temp)}' AS {TARGET}")
    try:
        return _copy(conn, source, TARGET, temp)
    finally:
        conn.execute(f"DETACH {TARGET}")


def _publish_from_path(warehouse: str, temp: Path) -> tuple:
    if not Path(warehouse).is_file():
        raise SnapshotError(f"no warehouse at {warehouse} yet: sync an integration first")
    with duckdb.connect(str(temp)) as conn:
        try:
            conn.execute(f"ATTACH '{_quoted(Path(warehouse))}' AS {SOURCE} (READ_ONLY)")
        except duckdb.IOException as error:
            if "lock" in str(error).lower():
                raise SnapshotError(
                    f"the warehouse {warehouse} is being written; the sync publishes the "
                    "snapshot when it finishes"
                ) from None
            raise
        (target,) = conn.execute("SELECT current_database()").fetchone()
        info = _copy(conn, SOURCE, target, temp)
        conn.execute(f"DETACH {SOURCE}")
        conn.execute("CHECKPOINT")
    return info


def _copy(conn: duckdb.DuckDBPyConnection, src: str, dst: str, temp: Path) -> tuple:
    present = {
        name
        for (name,) in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'main'",
            [src],
        ).fetchall()
    }
    missing = [name for name in (*COPIED, "fct_costs") if name not in present]
    if missing:
        raise SnapshotError(f"the warehouse has no {', '.join(missing)} yet: sync first")
    tables = [*COPIED, *(name for name in OPTIONAL if name in present)]
    conn.execute("SET enable_progress_bar = false")  # a writer's logs, not a terminal
    conn.execute("BEGIN TRANSACTION")
    try:
        for name in tables:
            conn.execute(f"CREATE TABLE {dst}.main.{name} AS SELECT * FROM {src}.main.{name}")
        for name, select in AGGREGATES.items():
            conn.execute(f"CREATE TABLE {dst}.main.{name} AS {select.format(src=f'{src}.main')}")
        (fct_rows,) = conn.execute(f"SELECT count(*) FROM {src}.main.fct_costs").fetchone()
        (last_synced,) = conn.execute(
            f"SELECT max(last_synced_at) FROM {dst}.main.dim_integrations"
        ).fetchone()
        published = datetime.now(UTC).replace(tzinfo=None)
        all_tables = (*tables, *AGGREGATES)
        conn.execute(
            f"CREATE TABLE {dst}.main.snapshot_info AS SELECT ?::INTEGER AS version, "
            "?::TIMESTAMP AS published_at, ?::TIMESTAMP AS last_synced_at, "
            "?::BIGINT AS fct_rows, ?::VARCHAR[] AS tables",
            [SNAPSHOT_VERSION, published, last_synced, fct_rows, list(all_tables)],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return temp, published, last_synced, int(fct_rows), all_tables


def read_info(conn: duckdb.DuckDBPyConnection) -> SnapshotInfo | None:
    """What `snapshot_info` of an open snapshot says (None for a file that is no snapshot)."""
    try:
        row = conn.execute(
            "SELECT published_at, last_synced_at, fct_rows, tables FROM snapshot_info"
        ).fetchone()
    except duckdb.CatalogException:
        return None
    (path,) = conn.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return SnapshotInfo(Path(path or ""), row[0], row[1], int(row[2]), tuple(row[3]))


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
