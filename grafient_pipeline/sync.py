"""The sync steps the assets run, as plain functions (no Dagster).

A sync works on slices: one integration and a contiguous range of UTC dates. Fetching streams
the API's buckets into a staging file on disk (memory stays bounded and no DuckDB connection is
held across HTTP); loading then replaces the slice in one DuckDB transaction.
"""

from __future__ import annotations

import gc
import json
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

from grafient_pipeline.lake import is_lake_connection
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers import PROVIDERS
from grafient_pipeline.providers.base import (
    CostBucket,
    CostResult,
    NameRecord,
    Provider,
    ResultBatch,
)
from grafient_pipeline.warehouse import (
    ROLLUP_MODELS,
    bulk_write_settings,
    retry_on_conflict,
    run_models,
    transaction,
    write_transaction,
)

# The staging file: one line per result, its fields separated by US (0x1f): bucket start and end
# (unix seconds), amount and quantity as exact decimal text (the client's Decimals, never
# floats), an "escaped" flag, the five text fields exactly as the client parsed them, the
# result's original JSON quoted by STX (0x02), then "fields". JSON text holds no control
# characters (not even inside strings), and a text field can only hold one (decoded from an
# escape like \u001f or \n) if its result's JSON has a backslash: such rare results (flag 1)
# carry their text fields as JSON literals (json.dumps: ASCII, no control characters), which the
# load decodes. So nothing is ever escaped on the common path and a line is one string format.
# ETX (0x03) stands for None. A bulk-decoded batch (ResultBatch: OpenAI) writes its results
# another way, with no per-result Python: amount, quantity and the five text fields are None and
# "fields" holds the client's normalized fields as one JSON object (msgspec: no control
# characters, keys amount.value/currency, line_item, project_id, api_key_id, quantity and
# quantity_unit; numbers as ints or exact decimal text), which the raw model reads instead.
_NULL = "\x03"


@dataclass(frozen=True)
class Slice:
    integration_id: str
    dates: DateRange

    @property
    def params(self) -> dict[str, object]:
        return {
            "integration_id": self.integration_id,
            "start_date": self.dates.start,
            "end_date": self.dates.end,
        }

    def __str__(self) -> str:
        return f"{self.integration_id} {self.dates}"


@dataclass(frozen=True)
class StagedFetch:
    path: Path
    rows: int
    buckets: int


def utc_today() -> date:
    return datetime.now(UTC).date()


def slices_from_keys(keys: Iterable[tuple[str, date]]) -> list[Slice]:
    """Group (integration, date) pairs into contiguous date ranges per integration."""
    by_integration: dict[str, set[date]] = defaultdict(set)
    for integration_id, day in keys:
        by_integration[integration_id].add(day)
    slices: list[Slice] = []
    for integration_id in sorted(by_integration):
        days = sorted(by_integration[integration_id])
        start = previous = days[0]
        for day in days[1:]:
            if day != previous + timedelta(days=1):
                slices.append(Slice(integration_id, DateRange(start, previous)))
                start = day
            previous = day
        slices.append(Slice(integration_id, DateRange(start, previous)))
    return slices


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while results stream through.

    Parsing allocates millions of small container objects (results, the JSON scanner's dicts);
    each bucket's list of results lives long enough to be promoted, which triggers full
    collections that walk every object of the process (a Dagster run process holds a few
    hundred thousand). That was a third of the fetch time of a 1.66M-row backfill (12.8 s
    against 9.0 s). The loop makes no reference cycles worth collecting: everything it
    allocates is freed by reference counting, so memory stays bounded.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def stage_chunks(
    buckets: Iterable[CostBucket], directory: Path, prefix: str, rows_per_chunk: int | None
) -> Iterator[StagedFetch]:
    """Write the buckets' results to staging files of about ``rows_per_chunk`` rows each (whole
    buckets; ``None``: one file), yielding each file once it is complete; always at least one,
    possibly empty.

    This is the hot loop of a backfill: one write per bucket, no per-field quoting or escaping;
    one f-string per result of a list, none for a ResultBatch.
    """
    directory.mkdir(parents=True, exist_ok=True)
    number = rows = bucket_count = 0
    path = directory / f"{prefix}.{number}.stage"
    handle = path.open("wb")
    try:
        with _no_cyclic_gc():
            for bucket in buckets:
                results = bucket.results
                handle.write(_staged_lines(bucket.start_time, bucket.end_time, results))
                rows += len(results)
                bucket_count += 1
                if rows_per_chunk is not None and rows >= rows_per_chunk:
                    handle.close()
                    yield StagedFetch(path, rows, bucket_count)  # the caller's from here on
                    number += 1
                    rows = bucket_count = 0
                    path = directory / f"{prefix}.{number}.stage"
                    handle = path.open("wb")
        handle.close()
    except BaseException:  # the file being written is ours to delete, not those handed over
        if not handle.closed:
            handle.close()
            discard(path)
        raise
    yield StagedFetch(path, rows, bucket_count)


def _staged_lines(start: int, end: int, results: Sequence[CostResult]) -> bytes:
    if isinstance(results, ResultBatch):
        try:
            return _batch_lines(f"{start}\x1f{end}\x1f".encode(), results)
        except UnicodeEncodeError:  # a lone surrogate (from a JSON escape): one by one, escaped
            results = list(results)
    head, n = f"{start}\x1f{end}\x1f", _NULL
    return "".join(
        [
            f"{head}{r.amount_text}"
            f"\x1f{n if r.quantity_text is None else r.quantity_text}\x1f0"
            f"\x1f{n if r.line_item is None else r.line_item}"
            f"\x1f{n if r.project_id is None else r.project_id}"
            f"\x1f{n if r.api_key_id is None else r.api_key_id}"
            f"\x1f{n if r.currency is None else r.currency}"
            f"\x1f{n if r.quantity_unit is None else r.quantity_unit}"
            f"\x1f\x02{r.raw_json}\x02\x1f{n}\n"
            if "\\" not in r.raw_json
            else _escaped_line(head, r)
            for r in results
        ]
    ).encode()


def _batch_lines(head: bytes, batch: ResultBatch) -> bytes:
    """A ResultBatch's lines, built by slicing (no Python per result): before each raw JSON the
    bucket's times and seven None fields, after it the result's normalized fields."""
    count = len(batch)
    if not count:
        return b""
    fields = batch.fields_json_lines().split(b"\n")  # one more: empty, after the last newline
    before = head + b"\x03\x1f\x03\x1f0\x1f\x03\x1f\x03\x1f\x03\x1f\x03\x1f\x03\x1f\x02"
    parts = [b"\x02\x1f"] * (4 * count + 1)
    parts[0:-1:4] = [before, *([b"\n" + before] * (count - 1))]
    parts[1::4] = batch.raws
    parts[3::4] = fields[:count]
    parts[-1] = b"\n"
    return b"".join(parts)


def _escaped_line(head: str, r: CostResult) -> str:
    """A result whose JSON has escapes: its text fields as JSON literals, flagged."""
    text = json.dumps
    return (
        f"{head}{r.amount_text}\x1f{_NULL if r.quantity_text is None else r.quantity_text}\x1f1"
        f"\x1f{text(r.line_item)}\x1f{text(r.project_id)}\x1f{text(r.api_key_id)}"
        f"\x1f{text(r.currency)}\x1f{text(r.quantity_unit)}\x1f\x02{r.raw_json}\x02\x1f{_NULL}\n"
    )


def staging_prefix(run_id: str, piece: Slice) -> str:
    return f"{run_id}-{piece.integration_id}-{piece.dates.start}"


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def load_staged(
    conn: duckdb.DuckDBPyConnection,
    piece: Slice,
    staged: StagedFetch,
    run_id: str,
    *,
    replace: bool,
    raw_table: str,
) -> None:
    """Add a staged file's rows to the slice, first deleting the slice if ``replace`` (in the
    caller's transaction)."""
    params = {
        **piece.params,
        "staging_path": str(staged.path),
        "run_id": run_id,
        "fetched_at": datetime.now(UTC).replace(tzinfo=None),
        "replace": replace,
    }
    run_models(conn, [raw_table], params)


_DONE, _ABORT = object(), object()


class SliceLoader:
    """Loads a slice's staged files into its provider's raw table on a thread, while the fetch
    goes on.

    The fetch is Python (one core) and the load is DuckDB (which releases the GIL), so a big
    backfill's load hides behind its parsing. All files of the slice go in ONE transaction,
    opened when the first file is ready (never while waiting for the first response) and
    committed by ``finish``: readers see the old slice or the new one, never a part, and
    ``abort`` (or any failure) leaves the old slice as it was. Each file is deleted once loaded.
    ``before_commit(conn)`` runs in the same transaction once every file is in: it builds what
    derives from the raw slice and validates it; whatever it raises rolls everything back.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
        piece: Slice,
        run_id: str,
        *,
        raw_table: str,
        before_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        schema_ready: bool = False,
    ) -> None:
        self._connect, self._piece, self._run_id = connect, piece, run_id
        self._raw_table = raw_table
        self._before_commit = before_commit
        self._schema_ready = schema_ready  # the caller ran ensure_schema on this database
        self._queue: queue.Queue[object] = queue.Queue(maxsize=2)  # files on disk stay bounded
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="grafient-load", daemon=True)
        self._thread.start()

    def put(self, staged: StagedFetch) -> None:
        """Queue a staged file (waits while two are queued); raises the load's failure."""
        while True:
            self._raise_failure()
            try:
                self._queue.put(staged, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Commit the slice once every queued file is loaded; raises the load's failure."""
        self._stop(_DONE)
        self._raise_failure()

    def abort(self) -> None:
        """Roll the slice back (the old rows stay) and delete the files not loaded."""
        self._stop(_ABORT)

    def _stop(self, signal: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(signal, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, StagedFetch):
                discard(item.path)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        loaded: list[StagedFetch] = []  # kept until the commit on DuckLake, to redo a conflict
        try:
            item = self._queue.get()
            if item is _ABORT:
                return
            with self._connect() as conn:
                keep = is_lake_connection(conn)
                if not self._schema_ready or keep:  # a lake's staging macro is per connection
                    ensure_schema(conn)
                bulk_write_settings(conn)

                def attempt() -> None:
                    nonlocal item
                    with transaction(conn):
                        for number, staged in enumerate(loaded):  # a retry: the same files
                            self._load(conn, staged, replace=number == 0)
                        while isinstance(item, StagedFetch):
                            try:
                                self._load(conn, item, replace=not loaded)
                            finally:
                                loaded.append(item)
                                if not keep:
                                    discard(item.path)
                            item = self._queue.get()
                        if item is _ABORT:
                            raise _Aborted
                        if self._before_commit is not None:
                            self._before_commit(conn)

                retry_on_conflict(attempt)
        except _Aborted:
            pass
        except BaseException as error:  # handed to the fetching thread
            self._error = error
        finally:
            for staged in loaded:
                discard(staged.path)

    def _load(self, conn: duckdb.DuckDBPyConnection, staged: StagedFetch, replace: bool) -> None:
        load_staged(
            conn, self._piece, staged, self._run_id, replace=replace, raw_table=self._raw_table
        )


class _Aborted(Exception):
    """Rolls the slice's transaction back when the fetch failed."""


def build_marts(
    conn: duckdb.DuckDBPyConnection, piece: Slice, today: date, provider: Provider
) -> None:
    """Rebuild the slice of fct_costs from the provider's raw table, then both rollups (in the
    caller's transaction)."""
    params = {**piece.params, "today": today}
    if provider.prepare_fct is not None:
        provider.prepare_fct(conn, params)
    run_models(conn, [provider.fct_model], params)
    run_models(conn, ROLLUP_MODELS, params)


def build_rollup(conn: duckdb.DuckDBPyConnection, model: str, piece: Slice) -> None:
    bulk_write_settings(conn)
    write_transaction(conn, lambda c: run_models(c, [model], piece.params))


@dataclass(frozen=True)
class IntegrationRow:
    integration_id: str
    label: str
    provider: str
    plan: str
    organization_id: str | None
    status: str
    last_synced_at: datetime | None


def refresh_dim_integrations(
    conn: duckdb.DuckDBPyConnection, integrations: list[IntegrationRow]
) -> None:
    """Mirror the registry (no secrets). An integration removed without --purge keeps its rows
    in the warehouse, so it keeps its label here too, with status 'removed'. dim_providers
    names every provider the code knows.

    The rows go in as lists, unnested by one statement: ``executemany`` runs a statement per
    row (0.2 s for a fleet of 1,000, in every run)."""
    write_transaction(conn, lambda c: _refresh_dim_integrations(c, integrations))


def _refresh_dim_integrations(
    conn: duckdb.DuckDBPyConnection, integrations: list[IntegrationRow]
) -> None:
    conn.execute(
        "MERGE INTO dim_providers AS d USING (SELECT unnest($names) AS provider, "
        "unnest($titles) AS title) AS p ON d.provider = p.provider "
        "WHEN MATCHED AND d.title IS DISTINCT FROM p.title THEN UPDATE SET title = p.title "
        "WHEN NOT MATCHED THEN INSERT VALUES (p.provider, p.title)",
        {
            "names": [p.name for p in PROVIDERS.values()],
            "titles": [p.title for p in PROVIDERS.values()],
        },
    )
    conn.execute("UPDATE dim_integrations SET status = 'removed'")
    if not integrations:
        return
    ids = [i.integration_id for i in integrations]
    conn.execute("DELETE FROM dim_integrations WHERE list_contains($ids, integration_id)",
                 {"ids": ids})  # fmt: skip
    conn.execute(
        "INSERT INTO dim_integrations SELECT unnest($ids), unnest($labels), "
        "unnest($providers), unnest($plans), unnest($orgs), unnest($statuses), "
        "unnest($synced::TIMESTAMP[])",
        {
            "ids": ids,
            "labels": [i.label for i in integrations],
            "providers": [i.provider for i in integrations],
            "plans": [i.plan for i in integrations],
            "orgs": [i.organization_id for i in integrations],
            "statuses": [i.status for i in integrations],
            "synced": [
                None if i.last_synced_at is None else i.last_synced_at.replace(tzinfo=None)
                for i in integrations
            ],
        },
    )


@dataclass(frozen=True)
class IntegrationNames:
    """What one integration's names calls returned."""

    provider: str
    integration_id: str
    records: list[NameRecord]


def refresh_names(
    conn: duckdb.DuckDBPyConnection,
    provider: str,
    integration_id: str,
    records: list[NameRecord],
    seen_at: datetime,
) -> None:
    """Upsert the names of an integration's projects and API keys (one transaction). Nothing is
    deleted: a renamed project keeps its id, an archived or deleted one its last name."""
    refresh_names_of([IntegrationNames(provider, integration_id, records)], seen_at, conn)


def refresh_names_of(
    fetched: list[IntegrationNames], seen_at: datetime, conn: duckdb.DuckDBPyConnection
) -> None:
    """``refresh_names`` for several integrations at once (a daily batch): still one statement
    per table, in one transaction.

    The rows are passed as lists and unnested: DuckDB's ``executemany`` runs a statement per
    row (1.2 s for an organization's 16 projects and 256 keys, against 0.25 s a whole daily
    sync may take), and a statement per integration costs about 15 ms in a batch of 50."""
    stamp = seen_at.astimezone(UTC).replace(tzinfo=None)
    projects = [
        (names, r)
        for names in fetched
        for r in _merged([r for r in names.records if r.kind == "project"])
    ]
    keys = [
        (names, r)
        for names in fetched
        for r in _merged([r for r in names.records if r.kind == "api_key"])
    ]

    def upsert(conn: duckdb.DuckDBPyConnection) -> None:
        if projects:
            conn.execute(
                "MERGE INTO dim_projects AS t USING (SELECT unnest($providers) AS provider, "
                "unnest($integrations) AS integration_id, unnest($ids) AS project_id, "
                "unnest($names) AS name, unnest($statuses) AS status) AS s "
                "ON t.integration_id = s.integration_id AND t.project_id = s.project_id "
                "WHEN MATCHED THEN UPDATE SET name = coalesce(s.name, t.name), "
                "status = s.status, last_seen = $stamp "
                "WHEN NOT MATCHED THEN INSERT VALUES (s.provider, s.integration_id, "
                "s.project_id, s.name, s.status, $stamp, $stamp)",
                {"providers": [n.provider for n, _ in projects], "stamp": stamp,
                 "integrations": [n.integration_id for n, _ in projects],
                 "ids": [r.id for _, r in projects], "names": [r.name for _, r in projects],
                 "statuses": [r.status for _, r in projects]},
            )  # fmt: skip
        if keys:
            conn.execute(
                "MERGE INTO dim_api_keys AS t USING (SELECT unnest($providers) AS provider, "
                "unnest($integrations) AS integration_id, unnest($ids) AS api_key_id, "
                "unnest($projects) AS project_id, unnest($names) AS name, "
                "unnest($redacted) AS redacted_value, unnest($statuses) AS status) AS s "
                "ON t.integration_id = s.integration_id AND t.api_key_id = s.api_key_id "
                "WHEN MATCHED THEN UPDATE SET project_id = s.project_id, "
                "name = coalesce(s.name, t.name), redacted_value = s.redacted_value, "
                "status = s.status, last_seen = $stamp "
                "WHEN NOT MATCHED THEN INSERT VALUES (s.provider, s.integration_id, "
                "s.api_key_id, s.project_id, s.name, s.redacted_value, s.status, $stamp, $stamp)",
                {"providers": [n.provider for n, _ in keys], "stamp": stamp,
                 "integrations": [n.integration_id for n, _ in keys],
                 "ids": [r.id for _, r in keys], "projects": [r.project_id for _, r in keys],
                 "names": [r.name for _, r in keys],
                 "redacted": [r.redacted_value for _, r in keys],
                 "statuses": [r.status for _, r in keys]},
            )  # fmt: skip

    write_transaction(conn, upsert)


def _merged(records: list[NameRecord]) -> list[NameRecord]:
    """One record per id, as upserting them one after the other would leave it (a later record
    wins, except that a missing name keeps the earlier one): one INSERT cannot update a row
    twice."""
    by_id: dict[str, NameRecord] = {}
    for record in records:
        earlier = by_id.get(record.id)
        if earlier is not None and record.name is None:
            record = replace(record, name=earlier.name)
        by_id[record.id] = record
    return list(by_id.values())


# Every warehouse table that holds rows of an integration (a purge empties them all).
INTEGRATION_TABLES = (
    *(p.raw_table for p in PROVIDERS.values()),
    "fct_costs",
    "dim_projects",
    "dim_api_keys",
    "rollup_model_daily",
    "rollup_token_type_daily",
    "dim_integrations",
)


def purge_integration(conn: duckdb.DuckDBPyConnection, integration_id: str) -> None:
    """Delete every row of an integration from the warehouse, in one transaction."""

    def purge(conn: duckdb.DuckDBPyConnection) -> None:
        for table in INTEGRATION_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE integration_id = ?", [integration_id])

    write_transaction(conn, purge)


# Raw tables: (day, USD amount) columns; the other tables have cost_date and amount_usd.
_RAW_COLUMNS = {p.raw_table: ("bucket_start::DATE", p.raw_usd_column) for p in PROVIDERS.values()}
_DEFAULT_COLUMNS = ("cost_date", "amount_usd")


def slice_totals(conn: duckdb.DuckDBPyConnection, table: str, piece: Slice) -> tuple[int, Decimal]:
    """Row count and exact total of a table's slice."""
    day, amount = _RAW_COLUMNS.get(table, _DEFAULT_COLUMNS)
    count, total = conn.execute(
        f"SELECT count(*), coalesce(sum({amount}), 0) FROM {table} "
        f"WHERE integration_id = $integration_id AND {day} BETWEEN $start_date AND $end_date",
        piece.params,
    ).fetchone()
    return int(count), Decimal(total)


def daily_totals(conn: duckdb.DuckDBPyConnection, table: str, piece: Slice) -> dict[date, Decimal]:
    day, amount = _RAW_COLUMNS.get(table, _DEFAULT_COLUMNS)
    rows = conn.execute(
        f"SELECT {day} AS d, sum({amount}) FROM {table} "
        f"WHERE integration_id = $integration_id AND {day} BETWEEN $start_date AND $end_date "
        "GROUP BY d",
        piece.params,
    ).fetchall()
    return {d: Decimal(total) for d, total in rows}
