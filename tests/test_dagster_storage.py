"""The batching SQLite event log writes exactly what Dagster's own writes, event by event."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import BATCH_WRITABLE_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqliteEventLogStorage

from grafient_pipeline.dagster_storage import BatchingSqliteEventLogStorage
from grafient_pipeline.instance import get_instance
from grafient_pipeline.registry import Registry
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range


def _batches(events: list[EventLogEntry]) -> list[list[EventLogEntry]]:
    """Group consecutive batchable events the way the instance hands them over."""
    batches: list[list[EventLogEntry]] = []
    for event in events:
        batchable = event.dagster_event_type in BATCH_WRITABLE_EVENTS
        if batchable and batches and batches[-1][-1].dagster_event_type in BATCH_WRITABLE_EVENTS:
            batches[-1].append(event)
        else:
            batches.append([event])
    return batches


# Columns the database fills with its own clock when a row is written.
_WRITE_TIME = {"create_timestamp", "migration_completed"}


def _tables(directory: Path) -> dict[str, list[tuple]]:
    """Every row of every table of every database file, in insertion order."""
    contents: dict[str, list[tuple]] = {}
    for path in sorted(directory.glob("*.db")):
        with sqlite3.connect(path) as conn:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            for (name,) in conn.execute(query).fetchall():
                cursor = conn.execute(f"SELECT * FROM {name} ORDER BY rowid")
                keep = [i for i, c in enumerate(cursor.description) if c[0] not in _WRITE_TIME]
                rows = [tuple(row[i] for i in keep) for row in cursor.fetchall()]
                contents[f"{path.name}:{name}"] = rows
    return contents


@pytest.fixture
def run_events(settings, registry: Registry, instance: dg.DagsterInstance) -> list[EventLogEntry]:
    """All events of a real 5-day range run (5 partitions x 4 assets, checks, failures none)."""
    integration = registry.add("Test Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
    result = run_range(settings, instance, integration.id, last_days(5))
    assert result.success
    return list(instance.all_logs(result.run_id))


def test_batches_store_the_same_rows_as_single_events(tmp_path: Path, run_events) -> None:
    batched = [b for b in _batches(run_events) if len(b) > 1]
    assert sum(len(b) for b in batched) >= 5 * 4 * 2  # planned + materialized, per partition
    one_by_one = SqliteEventLogStorage(str(tmp_path / "single"))
    in_batches = BatchingSqliteEventLogStorage(str(tmp_path / "batched"))

    for event in run_events:
        one_by_one.store_event(event)
    for batch in _batches(run_events):
        if len(batch) == 1:
            in_batches.store_event(batch[0])
        else:
            in_batches.store_event_batch(batch)

    expected, got = _tables(tmp_path / "single"), _tables(tmp_path / "batched")
    assert expected.keys() == got.keys()
    assert any(rows for name, rows in expected.items() if name.endswith(":asset_keys"))
    differing = [name for name, rows in expected.items() if got[name] != rows]
    assert differing == []


def test_reads_see_batched_events(tmp_path: Path, run_events) -> None:
    storage = BatchingSqliteEventLogStorage(str(tmp_path / "batched"))
    storage.store_event_batch(
        [e for e in run_events if e.dagster_event_type in BATCH_WRITABLE_EVENTS]
    )
    key = dg.AssetKey("fct_costs")
    records = storage.fetch_materializations(key, limit=100).records
    assert len(records) == 5
    assert storage.get_materialized_partitions(key) == {r.partition_key for r in records}


def test_the_instance_of_a_home_uses_it(settings) -> None:
    with get_instance(settings) as instance:
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        assert Path(instance.event_log_storage._base_dir).is_relative_to(settings.dagster_home)
