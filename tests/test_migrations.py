"""An existing user's home (made by the code before numbered warehouse migrations, see
tests/fixtures/make_v0_home.py) upgrades in place: every raw row and every key survives, and
what derives from the raw rows is rebuilt by today's parser."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline.migrations.warehouse import MIGRATIONS, ensure_schema
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import load_settings
from tests.conftest import MASTER_KEY

FIXTURE = Path(__file__).parent / "fixtures" / "v0_home"
FIXTURE_KEY = "sk-admin-fixture-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def old_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    monkeypatch.setenv("GRAFIENT_HOME", str(home))
    monkeypatch.setenv("GRAFIENT_MASTER_KEY", MASTER_KEY)
    monkeypatch.delenv("GRAFIENT_WAREHOUSE", raising=False)
    return home


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


RAW = "SELECT * FROM raw_openai_costs ORDER BY ALL"
DAILY = "SELECT cost_date, sum(amount_usd) FROM {table} GROUP BY 1 ORDER BY 1"


def test_an_old_warehouse_upgrades_in_place_with_every_raw_row(old_home: Path):
    path = str(old_home / "warehouse.duckdb")
    with duckdb.connect(path) as conn:
        raw_before = _rows(conn, RAW)
        fct_before = _rows(conn, DAILY.format(table="fct_costs"))
        assert ("schema_migrations",) not in _rows(conn, "SHOW TABLES")

    with duckdb.connect(path) as conn:
        ensure_schema(conn)
        ensure_schema(conn)  # once only
        assert _rows(conn, RAW) == raw_before
        versions = _rows(conn, "SELECT version FROM schema_migrations ORDER BY 1")
        assert versions == [(m.number,) for m in MIGRATIONS]
        for table in ("fct_costs", "rollup_model_daily", "rollup_token_type_daily"):
            assert _rows(conn, DAILY.format(table=table)) == fct_before, table
        batch = _rows(
            conn,
            "SELECT model, service_tier, token_type FROM fct_costs "
            "WHERE line_item = 'batch | gpt-4o-2024-08-06, output'",
        )
        assert batch == [("gpt-4o-2024-08-06", "batch", "output")]
        capital = _rows(
            conn, "SELECT token_type FROM fct_costs WHERE line_item = 'gpt-4.1-2025-04-14, Input'"
        )
        assert capital == [("input",)]
        web = _rows(
            conn,
            "SELECT model, amount_usd FROM rollup_model_daily "
            "WHERE cost_date = DATE '2026-11-01' AND model LIKE '%web search%'",
        )
        assert web == [("web search tool calls", Decimal(5))]
        unknown = _rows(conn, "SELECT count(*) FROM dim_line_items WHERE recognized IS NULL")
        assert unknown == [(0,)]


def test_an_old_registry_keeps_every_integration_and_key(old_home: Path):
    registry = Registry.from_settings(load_settings())
    integrations = registry.list()
    assert [i.label for i in integrations] == ["Fixture Org", "Second Org"]
    assert registry.api_key(integrations[0].id) == FIXTURE_KEY


def test_a_new_warehouse_records_every_migration_without_running_them(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "new.duckdb")) as conn:
        ensure_schema(conn)
        versions = _rows(conn, "SELECT version FROM schema_migrations ORDER BY 1")
        assert versions == [(m.number,) for m in MIGRATIONS]
        columns = {
            name for (name,) in _rows(conn, "SELECT name FROM pragma_table_info('dim_line_items')")
        }
        assert {"recognized", "charge"} <= columns
