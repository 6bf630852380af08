"""The data folder: GRAFIENT_HOME with the Dagster instance config the project relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

from grafient_pipeline.settings import Settings

# Pool "duckdb" (every DuckDB-writing step) gets one slot: DuckDB allows one writing process.
DAGSTER_YAML = """\
# Written by grafient. DuckDB allows one writing process per file: every DuckDB-writing step
# uses the pool "duckdb", limited to one slot here; runs execute in process.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
telemetry:
  enabled: false
# Dagster's default SQLite storage and files, with event writes batched (180 partitions of a
# backfill: one transaction instead of 180); see grafient_pipeline/dagster_storage.py.
storage:
  custom:
    module: grafient_pipeline.dagster_storage
    class: GrafientSqliteStorage
    config:
      dagster_home: {dagster_home}
"""


def prepare_home(settings: Settings) -> Path:
    """Create GRAFIENT_HOME (private) and its dagster_home with dagster.yaml; idempotent."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.dagster_home.mkdir(exist_ok=True)
    config = settings.dagster_home / "dagster.yaml"
    text = DAGSTER_YAML.format(dagster_home=json.dumps(str(settings.dagster_home)))
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return settings.dagster_home


def dagster_environment(settings: Settings) -> dict[str, str]:
    """The environment a Dagster process needs: DAGSTER_HOME plus our settings."""
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(settings.dagster_home)
    env["GRAFIENT_HOME"] = str(settings.home)
    env["GRAFIENT_WAREHOUSE"] = settings.warehouse
    return env


def get_instance(settings: Settings):
    """The persistent Dagster instance under GRAFIENT_HOME (imported lazily: dagster is slow)."""
    import dagster as dg

    prepare_home(settings)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return dg.DagsterInstance.get()
