"""One slice's sync, start to finish, as plain Python (the assets call it; no Dagster here).

Fetch the slice's buckets, stage them on disk, load them into the provider's raw table on a
second thread, then, in the SAME transaction, rebuild fct_costs and the rollups, run the blocking
checks and make sure the integration still exists: only then commit. So after any failure
(API error, a check, a full disk, a purge that came first) the four tables still agree with
each other and hold the previous rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

import duckdb

from grafient_pipeline import progress
from grafient_pipeline.checks import require_reconciled, require_usd
from grafient_pipeline.providers.base import CostBucket, MalformedResponseError, Provider
from grafient_pipeline.sync import Slice, SliceLoader, build_marts, stage_chunks, staging_prefix

# A staged file holds about this many results (10 days of a 10,000-a-day organization): loading
# one while the next is fetched and parsed keeps both cores busy and the disk use bounded.
ROWS_PER_STAGED_FILE = 100_000


class IntegrationRemoved(Exception):
    """The integration was removed while its sync ran: its rows are not written."""


class BucketSource(Protocol):
    request_count: int

    def iter_buckets(self, start: date, end: date) -> Iterator[CostBucket]: ...


@dataclass(frozen=True)
class SliceSynced:
    piece: Slice
    rows: int
    buckets: int
    requests: int

    def describe(self) -> str:
        return (
            f"{self.piece}: {self.rows} results in {self.buckets} daily buckets, "
            f"{self.requests} requests"
        )


def sync_slice(
    piece: Slice,
    provider: Provider,
    source: BucketSource,
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    *,
    run_id: str,
    staging_dir: Path,
    today: date,
    still_registered: Callable[[], bool],
    schema_ready: bool = False,
) -> SliceSynced:
    """Replace the slice in all four tables in one transaction, or leave them as they were.
    ``schema_ready``: the caller ran ensure_schema on this database (tens of ms a slice)."""

    def finalize(conn: duckdb.DuckDBPyConnection) -> None:
        require_usd(conn, piece, provider.raw_table)
        build_marts(conn, piece, today, provider)
        require_reconciled(conn, piece, provider.raw_table)
        if not still_registered():
            raise IntegrationRemoved(
                f"{piece.integration_id} was removed while it was syncing: nothing was written"
            )

    loader = SliceLoader(
        connect,
        piece,
        run_id,
        before_commit=finalize,
        raw_table=provider.raw_table,
        schema_ready=schema_ready,
    )
    rows = buckets = 0
    try:
        fetched = checked_buckets(
            source.iter_buckets(piece.dates.start, piece.dates.end),
            lambda days, results: progress.report(str(piece), days, piece.dates.days, results),
        )
        prefix = staging_prefix(run_id, piece)
        for staged in stage_chunks(fetched, staging_dir, prefix, ROWS_PER_STAGED_FILE):
            loader.put(staged)
            rows, buckets = rows + staged.rows, buckets + staged.buckets
    except BaseException:
        loader.abort()
        raise
    loader.finish()
    return SliceSynced(piece, rows, buckets, source.request_count)


_LATEST_TIME = 2**33  # unix seconds in the year 2242: a bucket beyond is no real day


def checked_buckets(
    buckets: Iterable[CostBucket], on_bucket: Callable[[int, int], None] | None = None
) -> Iterator[CostBucket]:
    """The buckets of one answer, refused when one is not a plausible day or comes twice (on two
    pages or in one): loading both copies would double count the day. ``on_bucket(days,
    results)`` hears of each one."""
    seen: set[int] = set()
    results = 0
    for bucket in buckets:
        start, end = bucket.start_time, bucket.end_time
        if not 0 <= start < end <= _LATEST_TIME:
            raise MalformedResponseError(
                f"the API sent a bucket from {start} to {end} (unix seconds), which is no day: "
                "refusing the answer (nothing was written); try again later"
            )
        if start in seen:
            day = datetime.fromtimestamp(start, UTC).date()
            raise MalformedResponseError(
                f"the API sent the bucket of {day} twice in one answer: refusing it (nothing was "
                "written, no day is counted twice); try again later and report it if it persists"
            )
        seen.add(start)
        results += len(bucket.results)
        if on_bucket is not None:
            on_bucket(len(seen), results)
        yield bucket


def describe_failure(error: BaseException) -> str:
    """The real cause of a failed sync in one line a person can act on (no traceback)."""
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        advice = "; free some disk space and sync again" if error.errno == 28 else ""
        return f"{error.strerror}{where}{advice}"
    if isinstance(error, duckdb.Error):
        text = _first_line(str(error))
        return f"the warehouse refused the write ({type(error).__name__}: {text})"
    text = _first_line(str(error))
    return text or type(error).__name__


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[0]) if lines else ""
