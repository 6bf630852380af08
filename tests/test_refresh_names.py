"""refresh_names: the names upsert (one statement per table) keeps the per-row upsert's meaning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.providers.base import NameRecord
from grafient_pipeline.sync import refresh_names
from grafient_pipeline.warehouse import connect

T1 = datetime(2026, 3, 1, 6, tzinfo=UTC)
T2 = T1 + timedelta(days=1)


def project(id_: str, name: str | None, status: str = "active") -> NameRecord:
    return NameRecord("project", id_, name, status, None, None)


def key(id_: str, project_id: str, name: str | None, redacted: str = "sk-...a") -> NameRecord:
    return NameRecord("api_key", id_, name, "active", project_id, redacted, "Owner")


def rows(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def test_upsert_keeps_first_seen_and_known_names(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schema(conn)
        refresh_names(conn, "openai", "i1", [project("p1", "Web"), project("p2", "Batch"),
                                             key("k1", "p1", "prod")], T1)  # fmt: skip
        later = [project("p1", "Website"), project("p2", None, "archived"),
                 key("k1", "p2", None, "sk-...b"), key("k2", "p2", "ci")]  # fmt: skip
        refresh_names(conn, "openai", "i1", later, T2)
        stamp1, stamp2 = T1.replace(tzinfo=None), T2.replace(tzinfo=None)
        assert rows(conn, "dim_projects") == [
            ("openai", "i1", "p1", "Website", "active", stamp1, stamp2),
            ("openai", "i1", "p2", "Batch", "archived", stamp1, stamp2),
        ]
        assert rows(conn, "dim_api_keys") == [
            ("openai", "i1", "k1", "p2", "prod", "sk-...b", "active", stamp1, stamp2),
            ("openai", "i1", "k2", "p2", "ci", "sk-...a", "active", stamp2, stamp2),
        ]


def test_one_call_equals_one_upsert_per_record(tmp_path: Path) -> None:
    """An id listed twice (the API paged over a change) is one row, as upserting each record in
    turn would leave it; a single INSERT could not update the same row twice."""
    records = [project("p1", "Old"), project("p1", None, "archived"), project("p2", "B"),
               key("k1", "p1", "a"), key("k1", "p2", None, "sk-...z"), key("k2", "p1", None),
               key("k2", "p1", "named")]  # fmt: skip
    with (
        connect(str(tmp_path / "batch.duckdb")) as batch,
        connect(str(tmp_path / "each.duckdb")) as each,
    ):
        for conn in (batch, each):
            ensure_schema(conn)
        refresh_names(batch, "openai", "i1", records, T1)
        for record in records:
            refresh_names(each, "openai", "i1", [record], T1)
        for table in ("dim_projects", "dim_api_keys"):
            assert rows(batch, table) == rows(each, table)
        assert [r[3] for r in rows(batch, "dim_projects")] == ["Old", "B"]


def test_no_records_change_nothing(tmp_path: Path) -> None:
    with connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schema(conn)
        refresh_names(conn, "openai", "i1", [], T1)
        assert rows(conn, "dim_projects") == rows(conn, "dim_api_keys") == []
