"""DuckDB helpers and the runner for the SQL models in `dbt_like_sql/`.

People edit the models in the repository's `dbt_like_sql/`; `grafient_pipeline/sql` is a link to
that folder, so a wheel ships them as package data and a checkout reads the very same files.

Each SQL file builds one model; its header names what it builds, from what, and a
`-- depends_on:` line. Statements use named parameters (`$integration_id`) bound by DuckDB,
never string formatting.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from grafient_pipeline.lake import is_conflict, is_lake, is_lake_connection, open_lake
from grafient_pipeline.providers import PROVIDERS
from grafient_pipeline.settings import load_settings

logger = logging.getLogger(__name__)
SQL_DIR = Path(__file__).resolve().parent / "sql"
# The tables (provider-agnostic, then each provider's), then the views over them.
TABLE_MODELS = ("schema", *(f"schema_{name}" for name in PROVIDERS))
VIEW_MODELS = (
    "v_daily_costs",
    "v_month_to_date",
    "v_project_costs",
    "v_api_key_costs",
    "focus_costs",
)
SCHEMA_MODELS = (*TABLE_MODELS, *VIEW_MODELS)
# What fct_costs rows are rolled up into, in the same transaction as the slice they come from.
ROLLUP_MODELS = ["rollup_model_daily", "rollup_token_type_daily"]
# How the sync writes run (see `bulk_write_settings`).
BULK_WRITE_SETTINGS = {"memory_limit": "'256MB'", "preserve_insertion_order": "false"}
_DEPENDS_ON = re.compile(r"^--\s*depends_on:\s*(.*)$", re.MULTILINE)
_PARAM = re.compile(r"\$([a-z_]+)")
# DuckLake has no keys, no per-column compression, and a macro in its catalog would be one more
# catalog write per connection (a conflict between writers): the same models, adapted.
_LAKE_REWRITES = (
    (re.compile(r",\s*PRIMARY KEY\s*\([^)]*\)", re.IGNORECASE), ""),
    (re.compile(r"\s+PRIMARY KEY\b", re.IGNORECASE), ""),
    (re.compile(r"\s+USING COMPRESSION\s+\w+", re.IGNORECASE), ""),
    (re.compile(r"\bCREATE OR REPLACE MACRO\b", re.IGNORECASE), "CREATE OR REPLACE TEMP MACRO"),
)
# A DuckLake commit that loses to another writer's is redone from the start, this many times.
CONFLICT_ATTEMPTS = 10
T = TypeVar("T")


class WarehouseBusyError(RuntimeError):
    """Another process holds the DuckDB file's write lock for longer than we wait."""


@dataclass(frozen=True)
class SqlModel:
    name: str
    depends_on: tuple[str, ...]
    statements: tuple[str, ...]

    def run(
        self, conn: duckdb.DuckDBPyConnection, params: Mapping[str, Any], *, lake: bool = False
    ) -> None:
        for statement in self.statements:
            wanted = set(_PARAM.findall(statement))
            missing = wanted - params.keys()
            if missing:
                raise KeyError(f"model {self.name} needs parameters {sorted(missing)}")
            text = for_lake(statement) if lake else statement
            conn.execute(text, {k: params[k] for k in wanted} or None)


def for_lake(statement: str) -> str:
    """A model's statement as DuckLake takes it (no keys, no compression, a temporary macro)."""
    for pattern, replacement in _LAKE_REWRITES:
        statement = pattern.sub(replacement, statement)
    return statement


def _split_statements(text: str) -> tuple[str, ...]:
    """Statements end with `;` at the end of a line (our files never put one inside a string)."""
    parts = re.split(r";\s*$", text, flags=re.MULTILINE)
    body = (re.sub(r"^\s*--.*$", "", part, flags=re.MULTILINE).strip() for part in parts)
    return tuple(statement for statement in body if statement)


@cache
def load_models(sql_dir: Path = SQL_DIR) -> dict[str, SqlModel]:
    """All models (the shared ones in ``sql_dir``, then each provider's), in dependency order."""
    paths = sorted(sql_dir.glob("*.sql"))
    if not paths:  # an install built without its package data: say so, not a TypeError later
        raise FileNotFoundError(
            f"no SQL models in {sql_dir}: reinstall grafient-pipeline from a complete build"
        )
    for provider in PROVIDERS.values():
        paths += sorted(provider.sql_dir.glob("*.sql"))
    models: dict[str, SqlModel] = {}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        found = _DEPENDS_ON.search(text)
        deps = tuple(d.strip() for d in found.group(1).split(",") if d.strip()) if found else ()
        models[path.stem] = SqlModel(path.stem, deps, _split_statements(text))
    order = TopologicalSorter({name: m.depends_on for name, m in models.items()}).static_order()
    return {name: models[name] for name in order if name in models}


def run_models(
    conn: duckdb.DuckDBPyConnection, names: list[str], params: Mapping[str, Any]
) -> None:
    """Run the named models in dependency order inside the caller's transaction."""
    lake = is_lake_connection(conn)
    for name, model in load_models().items():
        if name in names:
            model.run(conn, params, lake=lake)


def bulk_write_settings(conn: duckdb.DuckDBPyConnection) -> None:
    """Bounded memory for the sync's big INSERT ... SELECTs, on this (step-scoped) connection.

    DuckDB's default memory limit is 80% of RAM: a 180-day backfill then keeps about 1 GB of
    buffers resident, growing with the range. With a limit it spills to `<warehouse>.tmp`
    instead. Insertion order is part of no contract (queries order what they show), and not
    keeping it lets a large insert write row groups as they come instead of buffering them to
    re-order, which is what makes a small limit cheap: a 1.66M-row load is faster (3.4 s against
    4.5 s) at a third of the memory (330 MB against 0.9-1 GB peak RSS). These are settings of
    the connection's database instance, which lives as long as the step's connection.
    """
    for name, value in BULK_WRITE_SETTINGS.items():
        conn.execute(f"SET {name} = {value}")


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a failure anywhere rolls the whole slice back."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def retry_on_conflict(work: Callable[[], T], *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """`work()` (one whole transaction), redone while its DuckLake commit conflicts with another
    writer's, waiting longer each time (with jitter, so the writers do not collide again)."""
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except duckdb.TransactionException as error:
            if not is_conflict(error) or attempt == attempts:
                raise
        wait = delay * random.uniform(0.5, 1.5)
        logger.info(
            "DuckLake commit conflicted with another writer's: retry %d of %d in %.2f s",
            attempt,
            attempts - 1,
            wait,
        )
        time.sleep(wait)
        delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


def write_transaction(
    conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]
) -> T:
    """`work(conn)` in one transaction, redone from the start on a DuckLake conflict."""

    def attempt() -> T:
        with transaction(conn):
            return work(conn)

    return retry_on_conflict(attempt)


def _is_lock_error(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


@contextmanager
def connect(
    database: str,
    *,
    read_only: bool = False,
    wait_seconds: float = 60.0,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; waits (bounded) while another process holds the write lock.

    `on_wait(wait_seconds)` is called once, when the first attempt finds the file locked.
    A `ducklake:` database opens the lake instead (no lock: DuckLake takes several writers).
    """
    if is_lake(database):
        settings = load_settings()
        conn = open_lake(
            database,
            data_path=settings.lake_data_path,
            data_path_given=settings.warehouse_data_path is not None,
            extension_dir=settings.home / "duckdb_extensions",
            read_only=read_only,
        )
        try:
            yield conn
        finally:
            conn.close()
        return
    if not database.startswith("md:"):
        # Usually GRAFIENT_HOME, made here when `grafient sql` is the first command: private.
        Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            conn = duckdb.connect(database, read_only=read_only)
            break
        except duckdb.Error as error:
            if on_wait is not None and _is_lock_error(error):
                on_wait(wait_seconds)
                on_wait = None
            if not _is_lock_error(error) or time.monotonic() >= deadline:
                if _is_lock_error(error):
                    raise WarehouseBusyError(
                        f"the warehouse {database} stayed locked by another process for "
                        f"{wait_seconds:.0f} s; wait for the running sync to finish and retry"
                    ) from None
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield conn
    finally:
        conn.close()
