"""Issue 17: the snapshot the dashboard reads, published atomically from the warehouse."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline.dashboard.reader import SnapshotReader, publish_if_missing
from grafient_pipeline.settings import load_settings
from grafient_pipeline.snapshot import SnapshotError, publish_snapshot, read_info
from tests.test_report import FACTS, build_warehouse

COUNT_INTEGRATIONS = "SELECT count(DISTINCT integration_id) FROM rollup_model_daily"


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    build_warehouse(path)
    return path


def totals(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return sorted(conn.execute(sql).fetchall())


def test_snapshot_holds_the_marts_and_aggregates_exactly(warehouse: Path, tmp_path: Path):
    snapshot = tmp_path / "snapshot.duckdb"
    info = publish_snapshot(warehouse, snapshot)

    assert info.path == snapshot and info.fct_rows == len(FACTS)
    assert totals(snapshot, "SELECT * FROM daily_costs") == totals(
        warehouse, "SELECT * FROM v_daily_costs"
    )
    for table in ("rollup_model_daily", "rollup_token_type_daily", "dim_integrations"):
        assert totals(snapshot, f"SELECT * FROM {table}") == totals(
            warehouse, f"SELECT * FROM {table}"
        )
    by_project = (
        "SELECT integration_id, cost_date, project_id, sum(amount_usd) FROM {} GROUP BY ALL"
    )
    assert totals(snapshot, by_project.format("project_daily")) == totals(
        warehouse, by_project.format("fct_costs")
    )
    by_key = "SELECT integration_id, api_key_id, sum(amount_usd) FROM {} GROUP BY ALL"
    assert totals(snapshot, by_key.format("api_key_daily")) == totals(
        warehouse, by_key.format("fct_costs")
    )
    (amount,) = totals(snapshot, "SELECT sum(amount_usd) FROM api_key_daily")[0]
    assert amount == sum(Decimal(f[4]) for f in FACTS)  # exact, every decimal place
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left behind


def test_snapshot_from_the_writers_own_connection(warehouse: Path, tmp_path: Path):
    """The cost asset publishes with the connection it wrote with (after its commit)."""
    snapshot = tmp_path / "snapshot.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        info = publish_snapshot(conn, snapshot)
        conn.execute("SELECT count(*) FROM fct_costs").fetchone()  # still usable after
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        assert read_info(conn).fct_rows == info.fct_rows == len(FACTS)


def test_optional_tables_are_copied_when_they_exist(warehouse: Path, tmp_path: Path):
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("CREATE TABLE spend_anomalies AS SELECT DATE '2026-11-02' AS day, 'x' AS s")
    info = publish_snapshot(warehouse, tmp_path / "snapshot.duckdb")
    assert "spend_anomalies" in info.tables and "spend_forecast" not in info.tables


def test_a_reader_keeps_its_generation_and_sees_the_next_one(warehouse: Path, tmp_path: Path):
    snapshot = tmp_path / "snapshot.duckdb"
    publish_snapshot(warehouse, snapshot)
    reader = SnapshotReader(snapshot)
    with reader.cursor() as (old, first):
        with duckdb.connect(str(warehouse)) as conn:
            conn.execute("DELETE FROM rollup_model_daily WHERE integration_id = 'beta'")
        time.sleep(0.01)  # a distinct mtime even on coarse clocks
        publish_snapshot(warehouse, snapshot)
        # the request that began on the old file finishes on it
        assert old.execute(COUNT_INTEGRATIONS).fetchone()[0] == 2
    with reader.cursor() as (new, second):
        assert second.key != first.key
        assert new.execute(COUNT_INTEGRATIONS).fetchone()[0] == 1


def test_a_locked_warehouse_is_refused_in_one_line(warehouse: Path, tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys, time; c = duckdb.connect({str(warehouse)!r}); "
         "print('locked', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SnapshotError, match="being written"):
            publish_snapshot(warehouse, tmp_path / "snapshot.duckdb")
        assert publish_if_missing(str(warehouse), tmp_path / "snapshot.duckdb").startswith(
            "no snapshot yet"
        )
    finally:
        holder.communicate("\n", timeout=30)
    assert not (tmp_path / "snapshot.duckdb").exists()


def test_no_warehouse_yet(tmp_path: Path):
    with pytest.raises(SnapshotError, match="sync an integration first"):
        publish_snapshot(tmp_path / "missing.duckdb", tmp_path / "snapshot.duckdb")


def test_settings_name_the_snapshot_in_the_home(tmp_path: Path):
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    assert settings.snapshot_path == tmp_path / "snapshot.duckdb"


def test_a_new_snapshot_is_built_in_the_background_while_the_old_view_answers():
    import threading

    from grafient_pipeline.dashboard.views import ViewCache

    cache, release = ViewCache(), threading.Event()
    assert cache.latest("page", 1, lambda: (1, "first")) == "first"

    def slow_build() -> tuple[int, str]:
        release.wait(10)
        return 2, "second"

    started = time.monotonic()
    assert cache.latest("page", 2, slow_build) == "first"  # at once, not after the build
    assert time.monotonic() - started < 1
    release.set()
    deadline = time.monotonic() + 10
    while cache.latest("page", 2, slow_build) != "second":
        assert time.monotonic() < deadline
        time.sleep(0.01)
