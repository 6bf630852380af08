"""Many short slices on one warehouse connection, as plain Python (no Dagster).

A daily run syncs a few days of tens of integrations. Writing each slice on its own connection
costs more than its rows: opening the DuckDB file, the schema check, the checkpoint at close
(tens of milliseconds, growing with the warehouse), then the same again for its names. So a run
fetches a group of short slices first, keeping their buckets in memory (HTTP only: no DuckDB
connection is held across an HTTP call), then writes them on ONE connection, each slice in its
own transaction exactly as ``sync_slice`` writes it (load, build, blocking checks, commit).

A group ends when its results pass ``PREFETCH_MAX_RESULTS``, so memory stays bounded; a slice
longer than ``PREFETCH_MAX_DAYS`` (a backfill) keeps the streaming path, which loads while it
fetches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date

import duckdb

from grafient_pipeline.providers.base import (
    CostBucket,
    CostClient,
    CostsApiError,
    NameRecord,
    Provider,
)
from grafient_pipeline.slice_sync import BucketSource
from grafient_pipeline.sync import Slice

# Longer slices stream (see slice_sync); the daily resync window is 3 days by default.
PREFETCH_MAX_DAYS = 7
# About 60 MB of parsed results held at once (5 days of a 10,000-a-day organization).
PREFETCH_MAX_RESULTS = 50_000
# Integrations fetched at once: their HTTP waits overlap (each one's requests stay sequential,
# and rate limits are per organization).
FETCH_THREADS = 4


def is_short(piece: Slice) -> bool:
    return piece.dates.days <= PREFETCH_MAX_DAYS


@dataclass
class Prefetched:
    """A slice's buckets as the API sent them, and its integration's names when read with it
    (``names_error`` says why not, when they could not be read)."""

    piece: Slice
    provider: Provider
    buckets: list[CostBucket]
    requests: int
    names: list[NameRecord] | None = None
    names_error: str | None = None
    results: int = field(init=False)

    def __post_init__(self) -> None:
        self.results = sum(len(bucket.results) for bucket in self.buckets)


class Replayed:
    """A ``BucketSource`` that hands out a prefetched slice's buckets again."""

    def __init__(self, fetched: Prefetched) -> None:
        self.request_count = fetched.requests
        self._fetched = fetched

    def iter_buckets(self, start: date, end: date) -> Iterator[CostBucket]:
        dates = self._fetched.piece.dates
        if (start, end) != (dates.start, dates.end):
            raise ValueError(f"prefetched {dates}, asked for {start}..{end}")
        return iter(self._fetched.buckets)


def prefetch(piece: Slice, provider: Provider, source: BucketSource) -> Prefetched:
    """Read a slice's buckets into memory (the source's requests counted from here)."""
    before = source.request_count
    buckets = list(source.iter_buckets(piece.dates.start, piece.dates.end))
    return Prefetched(piece, provider, buckets, source.request_count - before)


def fetch(
    client: Callable[[], AbstractContextManager[CostClient]],
    piece: Slice,
    provider: Provider,
    with_names: bool,
) -> Prefetched:
    """A slice's buckets and, when asked, its integration's names (a key without permission
    for them is no reason to fail: ``names_error`` says why they are missing). HTTP only, so
    it may run on a thread of its own."""
    with client() as opened:
        fetched = prefetch(piece, provider, opened)
        if with_names:
            fetched.names, fetched.names_error = read_names(opened)
    return fetched


def read_names(client: CostClient) -> tuple[list[NameRecord] | None, str | None]:
    """An integration's project and API key names, or why they could not be read: a key
    without permission for them is no reason for a sync to fail."""
    try:
        return [*client.iter_projects(), *client.iter_api_keys()], None
    except CostsApiError as error:
        return None, str(error)


def groups(slices: list[Slice]) -> Iterator[tuple[bool, list[Slice]]]:
    """Consecutive short slices as one group (True), each long slice on its own (False)."""
    run: list[Slice] = []
    for piece in slices:
        if is_short(piece):
            run.append(piece)
            continue
        if run:
            yield True, run
            run = []
        yield False, [piece]
    if run:
        yield True, run


def full(fetched: list[Prefetched]) -> bool:
    """Time to write what is held: enough results in memory."""
    return sum(f.results for f in fetched) >= PREFETCH_MAX_RESULTS


def lent(
    conn: duckdb.DuckDBPyConnection,
) -> Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]:
    """A ``connect`` for ``sync_slice`` that lends one open connection instead of opening the
    file again; its owner closes it. The loader uses it on its thread while this one waits
    (``sync_slice`` joins the loader before it returns): never two threads at once."""

    @contextmanager
    def lend() -> Iterator[duckdb.DuckDBPyConnection]:
        yield conn

    return lend
