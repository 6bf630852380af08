"""Schema upkeep of an existing warehouse file."""

from __future__ import annotations

from pathlib import Path

import duckdb

from grafient_pipeline.migrations.warehouse import ensure_schema

OLD_RAW_TABLE = """
CREATE TABLE raw_openai_costs (
    integration_id VARCHAR NOT NULL, bucket_start TIMESTAMP NOT NULL,
    bucket_end TIMESTAMP NOT NULL, line_item VARCHAR, project_id VARCHAR, api_key_id VARCHAR,
    amount_value DECIMAL(38, 16) NOT NULL, currency VARCHAR, quantity DECIMAL(38, 16),
    quantity_unit VARCHAR, fetched_at TIMESTAMP NOT NULL, run_id VARCHAR NOT NULL,
    raw_json VARCHAR NOT NULL
)
"""


def _raw_rows(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute("SELECT * FROM raw_openai_costs ORDER BY raw_json").fetchall()


def test_a_raw_table_from_before_zstd_is_rebuilt_once_with_the_same_rows(tmp_path: Path):
    path = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(path) as conn:
        conn.execute(OLD_RAW_TABLE)
        conn.execute(
            "INSERT INTO raw_openai_costs SELECT 'int_a', TIMESTAMP '2026-01-01' + INTERVAL (i) "
            "DAY, TIMESTAMP '2026-01-02' + INTERVAL (i) DAY, 'gpt-4o, input', 'proj', NULL, "
            "i / 7, 'usd', i, 'tokens', TIMESTAMP '2026-02-01', 'run', '{\"i\": ' || i || '}' "
            "FROM range(1000) t(i)"
        )
        before = _raw_rows(conn)

    with duckdb.connect(path) as conn:
        ensure_schema(conn)
        ensure_schema(conn)  # idempotent
        (ddl,) = conn.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = 'raw_openai_costs'"
        ).fetchone()
        tables = conn.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
        assert "USING COMPRESSION ZSTD" in ddl.upper()
        assert ("raw_openai_costs_before_zstd",) not in tables
        assert _raw_rows(conn) == before
