"""Read-only access to the published snapshot, reopened when a newer one is swapped in.

One in-memory DuckDB per snapshot generation (file inode + mtime) ATTACHes the file READ_ONLY;
each request takes its own cursor. A new generation gets a new in-memory database (DuckDB's
instance cache, keyed by path, would otherwise hand back the old file's instance); requests
still running on the old one finish on it, since their cursors keep it alive.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from grafient_pipeline.snapshot import SnapshotError, SnapshotInfo, publish_snapshot, read_info

ALIAS = "snap"


class NoSnapshot(RuntimeError):
    """Nothing published yet (the page says how to get data)."""


@dataclass(frozen=True)
class Generation:
    key: tuple[int, int, int]  # device, inode, mtime_ns
    conn: duckdb.DuckDBPyConnection
    info: SnapshotInfo | None
    tables: frozenset[str]


class SnapshotReader:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._current: Generation | None = None

    def generation(self) -> Generation:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise NoSnapshot(f"no snapshot at {self.path} yet") from None
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
        current = self._current
        if current is not None and current.key == key:
            return current
        with self._lock:
            if self._current is None or self._current.key != key:
                self._current = self._open(key)
            return self._current

    def _open(self, key: tuple[int, int, int]) -> Generation:
        conn = duckdb.connect(":memory:", config={"threads": 2})
        quoted = str(self.path).replace("'", "''")
        conn.execute(f"ATTACH '{quoted}' AS {ALIAS} (READ_ONLY)")
        conn.execute(f"USE {ALIAS}")
        tables = frozenset(
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [ALIAS]
            ).fetchall()
        )
        return Generation(key, conn, read_info(conn), tables)

    @contextmanager
    def cursor(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, Generation]]:
        generation = self.generation()
        cursor = generation.conn.cursor()
        try:
            cursor.execute(f"USE {ALIAS}")
            yield cursor, generation
        finally:
            cursor.close()


def publish_if_missing(warehouse: str, snapshot_path: Path) -> str | None:
    """At start-up: publish a first snapshot when there is none and the warehouse is free.
    Returns a line for the console when nothing could be published."""
    if snapshot_path.exists():
        return None
    if warehouse.startswith("md:") or not Path(warehouse).is_file():
        return "no data yet: add an integration on the Integrations page"
    try:
        publish_snapshot(warehouse, snapshot_path)
    except (SnapshotError, duckdb.Error) as error:
        return f"no snapshot yet ({str(error).splitlines()[0]})"
    return None
