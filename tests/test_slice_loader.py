"""Staged files of a slice load on a thread, in one transaction, while the fetch goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers.base import CostBucket, CostResult
from grafient_pipeline.sync import Slice, SliceLoader, StagedFetch, stage_chunks
from grafient_pipeline.warehouse import connect

DAY0 = date(2026, 3, 1)
PIECE = Slice("loader-test", DateRange(DAY0, DAY0 + timedelta(days=9)))


def _buckets(days: int, per_day: int, cents: int) -> list[CostBucket]:
    buckets = []
    for d in range(days):
        start = int(
            datetime.combine(DAY0 + timedelta(days=d), datetime.min.time(), UTC).timestamp()
        )
        results = [
            CostResult(
                "gpt-4o, input", "proj", None, f"0.{cents:02d}", "usd", "10", "tokens",
                json.dumps({"amount": {"value": f"0.{cents:02d}"}, "n": i}),
            )
            for i in range(per_day)
        ]  # fmt: skip
        buckets.append(CostBucket(start, start + 86400, results))
    return buckets


def _slice(warehouse: str) -> tuple[int, Decimal]:
    with connect(warehouse, read_only=True) as conn:
        count, total = conn.execute(
            "SELECT count(*), coalesce(sum(amount_value), 0) FROM raw_openai_costs"
        ).fetchone()
    return count, Decimal(total)


def _load(warehouse: str, staging: Path, buckets: list[CostBucket], run_id: str) -> None:
    loader = SliceLoader(lambda: connect(warehouse), PIECE, run_id, raw_table="raw_openai_costs")
    for staged in stage_chunks(buckets, staging, run_id, rows_per_chunk=25):
        loader.put(staged)
    loader.finish()


def test_chunks_split_at_buckets_and_there_is_always_one(tmp_path: Path) -> None:
    chunks = list(stage_chunks(_buckets(10, 10, 1), tmp_path, "p", rows_per_chunk=25))
    assert [(c.rows, c.buckets) for c in chunks] == [(30, 3), (30, 3), (30, 3), (10, 1)]
    assert [len(c.path.read_text().splitlines()) for c in chunks] == [30, 30, 30, 10]
    (empty,) = stage_chunks([], tmp_path, "q", rows_per_chunk=25)
    assert (empty.rows, empty.path.read_text()) == (0, "")


def test_closing_the_chunks_keeps_the_files_handed_over_and_deletes_the_one_being_written(
    tmp_path: Path,
) -> None:
    def failing() -> Iterator[CostBucket]:
        yield from _buckets(4, 10, 1)
        raise RuntimeError("the body ended early")

    chunks = stage_chunks(failing(), tmp_path, "p", rows_per_chunk=25)
    first = next(chunks)
    with pytest.raises(RuntimeError):
        next(chunks)
    assert [path.name for path in tmp_path.iterdir()] == [first.path.name]

    chunks = stage_chunks(_buckets(10, 10, 1), tmp_path, "q", rows_per_chunk=25)
    handed = next(chunks)
    chunks.close()  # the caller stopped (its load failed)
    assert handed.path.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [first.path.name, "q.0.stage"]
    )


def test_a_slice_of_many_files_replaces_the_old_one(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "w.duckdb")
    _load(warehouse, tmp_path / "staging", _buckets(10, 10, 1), "run-1")
    assert _slice(warehouse) == (100, Decimal("1.00"))

    _load(warehouse, tmp_path / "staging", _buckets(10, 7, 2), "run-2")

    assert _slice(warehouse) == (70, Decimal("1.40"))
    assert list((tmp_path / "staging").iterdir()) == []


def test_abort_keeps_the_old_slice_and_deletes_the_files(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "w.duckdb")
    _load(warehouse, tmp_path / "staging", _buckets(10, 10, 1), "run-1")
    loader = SliceLoader(lambda: connect(warehouse), PIECE, "run-2", raw_table="raw_openai_costs")
    chunks = stage_chunks(_buckets(10, 7, 2), tmp_path / "staging", "run-2", rows_per_chunk=25)
    loader.put(next(chunks))
    loader.put(next(chunks))
    chunks.close()  # the fetch failed half way

    loader.abort()

    assert _slice(warehouse) == (100, Decimal("1.00"))
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_failed_load_is_raised_to_the_fetch_and_rolled_back(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "w.duckdb")
    _load(warehouse, tmp_path / "staging", _buckets(10, 10, 1), "run-1")
    bad = tmp_path / "bad.stage"
    bad.write_text("not\x1fa staged line\n")
    loader = SliceLoader(lambda: connect(warehouse), PIECE, "run-2", raw_table="raw_openai_costs")
    loader.put(next(stage_chunks(_buckets(2, 5, 2), tmp_path / "staging", "ok", None)))
    loader.put(StagedFetch(bad, 1, 1))

    with pytest.raises(duckdb.Error):
        loader.finish()

    assert _slice(warehouse) == (100, Decimal("1.00"))
    assert not bad.exists()
