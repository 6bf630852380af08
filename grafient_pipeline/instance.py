"""The data folder: GRAFIENT_HOME with the Dagster instance config the project relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from grafient_pipeline.settings import (
    DAGSTER_POSTGRES_URL,
    LAKE_PREFIX,
    POSTGRES_DRIVER_SCHEME,
    Settings,
    SettingsError,
    redacted_url,
)

# Pool "duckdb" (every DuckDB-writing step) gets one slot: DuckDB allows one writing process.
# On DuckLake (GRAFIENT_WAREHOUSE=ducklake:...) several processes write at once: four slots.
LAKE_POOL_LIMIT = 4
DAGSTER_YAML_COMMON = """\
# Written by grafient. DuckDB allows one writing process per file: every DuckDB-writing step
# uses the pool "duckdb", limited to one slot here; runs execute in process.
concurrency:
  pools:
    default_limit: 1
    # One run beyond the pool's slot may start and wait for it: its process start and code load
    # (seconds) overlap the step that holds the slot, which it takes as soon as it is free.
    op_granularity_run_buffer: 1
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""

SQLITE_STORAGE = """\
# Dagster's default SQLite storage and files, with event writes batched (180 partitions of a
# backfill: one transaction instead of 180); see grafient_pipeline/dagster_storage.py.
storage:
  custom:
    module: grafient_pipeline.dagster_storage
    class: GrafientSqliteStorage
    config:
      dagster_home: {dagster_home}
"""

# The URL (and its password) stays in the environment: Dagster reads it at start-up, and neither
# this file nor the webserver's configuration page shows it.
POSTGRES_STORAGE = f"""\
# Runs, events and schedules in PostgreSQL (dagster-postgres), shared by every process and
# machine that sets {DAGSTER_POSTGRES_URL}={POSTGRES_DRIVER_SCHEME}://USER:PASSWORD@HOST/DB.
storage:
  postgres:
    postgres_url:
      env: {DAGSTER_POSTGRES_URL}
"""

DAGSTER_YAML = DAGSTER_YAML_COMMON + SQLITE_STORAGE


def dagster_yaml(settings: Settings) -> str:
    """The instance config: SQLite files under dagster_home, or PostgreSQL when its URL is set."""
    common = DAGSTER_YAML_COMMON
    if settings.warehouse.startswith(LAKE_PREFIX):
        common = common.replace(
            "DuckDB allows one writing process per file", "DuckLake takes several writers"
        ).replace("to one slot here", f"to {LAKE_POOL_LIMIT} slots here")
        common = common.replace("default_limit: 1\n", f"default_limit: {LAKE_POOL_LIMIT}\n")
    if settings.dagster_postgres_url:
        return common + POSTGRES_STORAGE
    return common + SQLITE_STORAGE.format(dagster_home=json.dumps(str(settings.dagster_home)))


def prepare_home(settings: Settings) -> Path:
    """Create GRAFIENT_HOME (private) and its dagster_home with dagster.yaml; idempotent."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.dagster_home.mkdir(exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    text = dagster_yaml(settings)
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return settings.dagster_home


def dagster_environment(settings: Settings) -> dict[str, str]:
    """The environment a Dagster process needs: DAGSTER_HOME plus our settings."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    env["GRAFIENT_HOME"] = str(settings.home)
    env["GRAFIENT_WAREHOUSE"] = settings.warehouse
    if settings.dagster_postgres_url:  # the driver-qualified form dagster.yaml's `env:` reads
        env[DAGSTER_POSTGRES_URL] = settings.dagster_postgres_url
    return env


def get_instance(settings: Settings):
    """The persistent Dagster instance under GRAFIENT_HOME (imported lazily: dagster is slow)."""
    import dagster as dg

    prepare_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    url = settings.dagster_postgres_url
    if not url:
        return dg.DagsterInstance.get()
    os.environ[DAGSTER_POSTGRES_URL] = url
    try:
        return dg.DagsterInstance.get()
    except Exception as error:  # dagster-postgres gives up after its retries (about 15 s)
        if not type(error).__module__.startswith(("dagster_postgres", "sqlalchemy", "psycopg2")):
            raise
        reason = _first_line(getattr(error.__cause__ or error.__context__, "orig", None) or error)
        raise SettingsError(
            f"Dagster's PostgreSQL at {redacted_url(url)} is out of reach ({reason}): "
            f"check {DAGSTER_POSTGRES_URL} and that the server runs"
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
