"""Issue 19: the warehouse on DuckLake (GRAFIENT_WAREHOUSE=ducklake:<PostgreSQL catalog>).

The lake's work runs in subprocesses on duckdb 1.5.5 (tests/ducklake.py), against a real
PostgreSQL catalog (tests/postgres.py) and the Costs API emulator of this process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline.instance import dagster_yaml
from grafient_pipeline.lake import LakeError, check_extensions, is_conflict, parse_catalog
from grafient_pipeline.plans import backfill_window
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.settings import load_settings
from grafient_pipeline.sync import utc_today
from grafient_pipeline.warehouse import for_lake, load_models, retry_on_conflict
from tests.conftest import last_days
from tests.ducklake import lake_env, require_deps, run_python
from tests.postgres import PASSWORD, postgres_server, postgres_url  # noqa: F401

ORGS = {f"org-lake-{n}": f"sk-admin-lake-{n}-" + "Qx7w" * 8 for n in range(4)}
DATES = last_days(5)
WORKER = "tests.ducklake_worker"
TABLES = ("raw_openai_costs", "fct_costs", "rollup_model_daily")


# ------------------------------------------------------------------ without a lake (fast)


def test_catalog_url_keeps_the_password_apart() -> None:
    catalog = parse_catalog(
        "ducklake:postgresql://lake:s%40cret@db.internal:6543/costs?sslmode=require"
    )
    assert catalog.password == "s@cret"
    assert catalog.conninfo == "host=db.internal port=6543 user=lake dbname=costs sslmode=require"
    assert catalog.describe() == "db.internal:6543/costs"


def test_catalog_conninfo_as_ducklake_writes_it() -> None:
    catalog = parse_catalog("ducklake:postgres:dbname=costs host=h password='a b\\'c' user=u")
    assert catalog.password == "a b'c"
    assert "password" not in catalog.conninfo
    assert catalog.conninfo == "dbname=costs host=h user=u"


def test_a_catalog_that_is_no_postgresql_is_refused() -> None:
    with pytest.raises(LakeError, match="PostgreSQL"):
        parse_catalog("ducklake:mysql://u:p@h/db")
    with pytest.raises(LakeError, match="PostgreSQL"):
        parse_catalog("ducklake:")


def test_models_adapted_for_the_lake_lose_keys_compression_and_persistent_macros() -> None:
    models = load_models()
    adapted = [for_lake(s) for name in ("schema", "schema_openai") for s in models[name].statements]
    text = "\n".join(adapted).upper()
    assert "PRIMARY KEY" not in text and "COMPRESSION" not in text
    assert "CREATE OR REPLACE TEMP MACRO STAGED_RESULTS" in text
    # the same statements still build a DuckDB database (keys and all for the file)
    conn = duckdb.connect(":memory:")
    for statement in adapted:
        conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] >= 8


def test_data_path_defaults_to_the_home_and_can_be_set(tmp_path: Path) -> None:
    env = {"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_WAREHOUSE": "ducklake:dbname=x"}
    assert load_settings(env).lake_data_path == f"{tmp_path / 'lake'}/"
    env["GRAFIENT_WAREHOUSE_DATA_PATH"] = "s3://bucket/lake/"
    assert load_settings(env).lake_data_path == "s3://bucket/lake/"


def test_the_install_check_names_the_extra_without_the_extensions() -> None:
    with pytest.raises(LakeError, match="ducklake"):
        check_extensions()  # this suite's duckdb has no DuckLake extension package


def test_the_install_check_passes_with_the_extra() -> None:
    deps = require_deps()
    code = "from grafient_pipeline.lake import check_extensions; check_extensions(); print('ok')"
    assert run_python(deps, code, {}).strip() == "ok"


def test_the_duckdb_pool_has_four_slots_on_a_lake_and_one_on_a_file(tmp_path: Path) -> None:
    file = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    lake = load_settings(
        {"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_WAREHOUSE": "ducklake:dbname=x"}
    )
    assert "default_limit: 1\n" in dagster_yaml(file)
    assert "default_limit: 4\n" in dagster_yaml(lake)


def test_a_conflict_is_retried_and_other_errors_are_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("grafient_pipeline.warehouse.time.sleep", lambda _: None)
    caplog.set_level(logging.INFO, logger="grafient_pipeline.warehouse")
    conflict = duckdb.TransactionException(
        "Failed to commit DuckLake transaction. Transaction conflict"
    )
    assert is_conflict(conflict)
    calls = []

    def twice_lost() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise conflict
        return "committed"

    assert retry_on_conflict(twice_lost) == "committed" and len(calls) == 3
    retried = [r.getMessage() for r in caplog.records if "conflicted" in r.getMessage()]
    assert len(retried) == 2 and retried[0].startswith("DuckLake commit conflicted"), retried
    with pytest.raises(duckdb.TransactionException):
        retry_on_conflict(lambda: (_ for _ in ()).throw(conflict), attempts=2)
    with pytest.raises(duckdb.ConstraintException):
        retry_on_conflict(lambda: (_ for _ in ()).throw(duckdb.ConstraintException("dup")))


# ------------------------------------------------------------ on a real lake (subprocesses)


@pytest.fixture
def lake(tmp_path: Path, postgres_url: str):  # noqa: F811
    """The environment of a lake's subprocesses, its schema created, and an emulator."""
    deps = require_deps()
    with CostsEmulator(ORGS, seed=19, results_per_day=30) as emulator:
        env = {
            "GRAFIENT_HOME": str(tmp_path / "home"),
            "GRAFIENT_WAREHOUSE": "ducklake:" + postgres_url,
        }
        worker(deps, env, "schema")
        yield deps, env, emulator


def worker(deps: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", WORKER, *args],
        env=lake_env(deps, **env),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def start_worker(deps: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER, *args],
        env=lake_env(deps, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sync_args(emulator: CostsEmulator, number: int) -> list[str]:
    org = f"org-lake-{number}"
    dates = [str(DATES.start), str(DATES.end)]
    return ["sync", f"lake-{number}", ORGS[org], emulator.base_url, *dates]


def expected(emulator: CostsEmulator, number: int) -> Decimal:
    return emulator.expected_total(f"org-lake-{number}", DATES.start, DATES.end)


def totals(deps: Path, env: dict[str, str], table: str) -> dict[str, Decimal]:
    amount = "amount_value" if table == "raw_openai_costs" else "amount_usd"
    sql = f"SELECT integration_id, sum({amount})::VARCHAR FROM {table} GROUP BY 1"
    rows = json.loads(worker(deps, env, "query", sql))
    return {integration: Decimal(total) for integration, total in rows}


def sync_all_at_once(deps: Path, env: dict[str, str], emulator: CostsEmulator) -> None:
    writers = [start_worker(deps, env, *sync_args(emulator, n)) for n in range(4)]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err


def test_four_writers_at_once_with_a_reader(lake, tmp_path: Path) -> None:
    """Round one writes four new slices; round two replaces all four at once (their deletes
    make DuckLake's commits conflict: each writer redoes its slice until it commits)."""
    deps, env, emulator = lake
    stop = tmp_path / "stop-reading"
    ids = ",".join(f"lake-{n}" for n in range(4))
    reader = start_worker(deps, env, "read", str(stop), ids)
    sync_all_at_once(deps, env, emulator)
    first = {f"lake-{n}": expected(emulator, n) for n in range(4)}
    for table in TABLES:
        assert totals(deps, env, table) == first, table
    for n in range(4):
        emulator.restate_day(f"org-lake-{n}", DATES.end, Decimal("2"))
    sync_all_at_once(deps, env, emulator)
    stop.touch()
    answers, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    second = {f"lake-{n}": expected(emulator, n) for n in range(4)}
    assert all(second[i] > first[i] > 0 for i in first)
    for table in TABLES:
        assert totals(deps, env, table) == second, table
    grain = "integration_id, bucket_start, line_item, project_id, api_key_id"
    sql = f"SELECT count(*) - count(DISTINCT ({grain})) FROM raw_openai_costs"
    (dupes,) = json.loads(worker(deps, env, "query", sql))[0]
    assert dupes == 0
    seen = [json.loads(line) for line in answers.splitlines()]
    assert len(seen) >= 3, "the reader answered while the writers wrote"
    for answer in seen:  # a slice is seen whole or not at all, in every table
        for table in TABLES:
            for integration, total in answer[table].items():
                assert Decimal(total) in (first[integration], second[integration]), table


def test_a_killed_writer_leaves_no_partial_slice(lake) -> None:
    deps, env, emulator = lake
    worker(deps, env, *sync_args(emulator, 0))
    before = {table: totals(deps, env, table) for table in TABLES}
    emulator.restate_day("org-lake-0", DATES.end, Decimal("3"))
    hanging = start_worker(deps, env, *sync_args(emulator, 0), "--hang")
    assert hanging.stdout is not None
    assert hanging.stdout.readline().strip() == "ready", (
        hanging.stderr.read() if hanging.stderr else ""
    )
    os.kill(hanging.pid, signal.SIGKILL)
    hanging.wait(timeout=30)
    assert {table: totals(deps, env, table) for table in TABLES} == before
    worker(deps, env, *sync_args(emulator, 0))  # and the next sync writes the restated slice
    for table in TABLES:
        assert totals(deps, env, table) == {"lake-0": expected(emulator, 0)}, table


def test_a_wrong_password_is_one_line_without_it(lake) -> None:
    deps, env, _ = lake
    wrong = env["GRAFIENT_WAREHOUSE"].replace(PASSWORD, "not-the-Secret-42")
    code = (
        "from grafient_pipeline.warehouse import connect\n"
        "from grafient_pipeline.lake import LakeError\n"
        "try:\n"
        f"    with connect({wrong!r}): pass\n"
        "except LakeError as error:\n"
        "    print(error)\n"
    )
    message = run_python(deps, code, env).strip()
    assert "cannot be opened" in message and "password authentication failed" in message
    assert "not-the-Secret-42" not in message and len(message.splitlines()) == 1
    paths = worker(deps, env, "query", "SELECT path FROM duckdb_databases()")
    assert PASSWORD not in paths


def test_grafient_sql_and_the_snapshot_on_a_lake(lake) -> None:
    deps, env, emulator = lake
    worker(deps, env, *sync_args(emulator, 1))
    sql = subprocess.run(
        [sys.executable, "-m", "grafient_pipeline.cli", "sql",
         "SELECT sum(amount_usd)::VARCHAR AS total FROM v_daily_costs"],
        env=lake_env(deps, **env), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert sql.returncode == 0, sql.stderr
    assert str(expected(emulator, 1).normalize()) in sql.stdout.replace(",", "")
    snapshot = Path(env["GRAFIENT_HOME"]) / "snapshot.duckdb"
    code = (
        "from grafient_pipeline.snapshot import publish_snapshot\n"
        "from grafient_pipeline.settings import load_settings\n"
        "s = load_settings()\n"
        f"print(publish_snapshot(s.warehouse, {str(snapshot)!r}).fct_rows)\n"
    )
    assert int(run_python(deps, code, env)) > 0
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM daily_costs").fetchone()
    assert total == expected(emulator, 1)


def test_the_dagster_backfill_of_a_new_integration_writes_the_lake(lake) -> None:
    """`grafient integrations add` runs the plan window's backfill in process: the real Dagster
    run of the cost multi-asset, its checks and the intelligence assets, on the lake."""
    deps, env, emulator = lake
    org = "org-lake-2"
    cli_env = {**env, "GRAFIENT_OPENAI_BASE_URL": emulator.base_url}
    added = subprocess.run(
        [sys.executable, "-m", "grafient_pipeline.cli", "integrations", "add",
         "--label", "Lake Dagster", "--plan", "free", "--key-stdin"],
        input=ORGS[org], env=lake_env(deps, **cli_env), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    window = backfill_window("free", utc_today())
    want = emulator.expected_total(org, window.start, window.end)
    for table in (*TABLES, "rollup_token_type_daily"):
        assert totals(deps, env, table) == {"lake-dagster": want}, table
    assert ORGS[org] not in added.stdout + added.stderr
