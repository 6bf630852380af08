"""The cost assets: raw buckets -> fct_costs -> two rollups, partitioned by date x integration.

Connections come from warehouse.connect on the DuckDBResource's file (always closed, even when a
write fails: dagster-duckdb's get_connection leaves it open then). The four tables are
materialized by ONE step (a multi-asset): each slice is fetched, loaded,
normalized, rolled up and checked in one DuckDB transaction (see slice_sync), so the tables
never disagree, whatever fails. The lineage stays four assets named after their tables.
"""

import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from grafient_pipeline import slice_batch
from grafient_pipeline.defs.costs.publish import later_writer
from grafient_pipeline.defs.costs.results import FCT, RAW, ROLLUPS, materializations
from grafient_pipeline.defs.resources import CostsApiResource, RegistryResource
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.partitions import NOTE_TAG, PLAN_DATE_TAG, cost_partitions, slices_for
from grafient_pipeline.plans import PlanError, check_range, judging_date
from grafient_pipeline.providers import get_provider, local_api_down, resolve_base_url
from grafient_pipeline.providers.base import Provider, UpstreamError
from grafient_pipeline.registry import Integration, IntegrationNotFound, Registry, RegistryError
from grafient_pipeline.run_workers import PID_TAG, worker_tags
from grafient_pipeline.slice_sync import IntegrationRemoved, describe_failure, sync_slice
from grafient_pipeline.snapshot import publish_snapshot
from grafient_pipeline.sync import (
    IntegrationNames,
    IntegrationRow,
    Slice,
    refresh_dim_integrations,
    refresh_names,
    refresh_names_of,
    utc_today,
)
from grafient_pipeline.vault import MasterKeyError, VaultError
from grafient_pipeline.warehouse import connect

GROUP = "openai_costs"
KINDS = {"openai", "duckdb"}


def _spec(name: str, description: str, deps: list[str]) -> dg.AssetSpec:
    return dg.AssetSpec(name, description=description, deps=deps, kinds=KINDS, group_name=GROUP)


def _check(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


SPECS = [
    _spec(
        RAW,
        "Raw daily cost buckets from the OpenAI Costs API, one row per result "
        "(table raw_openai_costs), with each result's original JSON. Partitions: date x "
        "integration; OpenAI keeps about 180 days, so dates older than an integration's plan "
        "window are never fetched and show as missing in the UI.",
        [],
    ),
    _spec(
        FCT,
        "Normalized cost facts (table fct_costs): model, token type, service tier parsed from "
        "each line item; exact decimal USD; is_final false for today.",
        [RAW],
    ),
    _spec(
        "rollup_model_daily",
        "Spend per integration, day and model, split into input, output, cached input, cache "
        "writes and other (table rollup_model_daily).",
        [FCT],
    ),
    _spec(
        "rollup_token_type_daily",
        "Spend per integration, day and token type (table rollup_token_type_daily).",
        [FCT],
    ),
]
BLOCKING_BEFORE_COMMIT = " Checked before the slice is written: a failing slice is not written."
CHECK_SPECS = [
    _check(
        "single_currency",
        RAW,
        "Every amount is in US dollars (currency codes compare case-insensitively)."
        + BLOCKING_BEFORE_COMMIT,
        blocking=True,
    ),
    _check(
        "reconciles_with_raw",
        FCT,
        "Per integration and day, fct_costs sums to raw_openai_costs to the last decimal."
        + BLOCKING_BEFORE_COMMIT,
        blocking=True,
    ),
    _check(
        "line_items_recognized",
        FCT,
        "Every line item is one the parser knows: token charges, and non-token charges such as "
        "tool calls and storage (token_type 'other'). Warns on text it does not know (kept as "
        "'other' with its text, never dropped): a new word for grafient_pipeline/providers/openai/"
        "line_items.py.",
    ),
    _check("no_negative_amounts", FCT, "No negative amounts (credits, refunds)."),
    *(
        _check(
            "reconciles_with_fct",
            rollup,
            "Per integration and day, the rollup sums to fct_costs to the last decimal."
            + BLOCKING_BEFORE_COMMIT,
            blocking=True,
        )
        for rollup in ROLLUPS
    ),
]


def claim_run_worker(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> None:
    """Record this process as the run's worker (see run_workers): the daemon launches runs
    without our tags, and a step holds the duckdb pool's only slot."""
    if PID_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, worker_tags())


def integration_rows(registry: Registry) -> list[IntegrationRow]:
    return [
        IntegrationRow(
            i.id, i.label, i.provider, i.plan, i.organization_id, i.status, i.last_synced_at
        )
        for i in registry.list()
    ]


def plan_date(tags: dict[str, str], today: date) -> date:
    """The date whose plan window judges this run (see plans.judging_date)."""
    try:
        requested_on = date.fromisoformat(tags[PLAN_DATE_TAG])
    except (KeyError, ValueError):
        requested_on = None
    return judging_date(requested_on, today)


def _validate(registry: Registry, slices: list[Slice], judged_on: date) -> None:
    """Refuse the whole run before any HTTP call: unknown integration or dates past the plan."""
    for piece in slices:
        try:
            integration = registry.get(piece.integration_id)
            check_range(integration.plan, piece.dates, judged_on)
        except (RegistryError, PlanError) as error:
            raise dg.Failure(f"{piece.integration_id}: {error}") from None


def _failed(
    context: dg.AssetExecutionContext,
    store: Registry,
    piece: Slice,
    error: Exception,
    base_url: str | None,
):
    """Record why a slice failed on its integration (status error, last_error) and say it.

    Failures of this machine rather than of the integration (a master key that does not fit,
    the demo's emulator not running) leave its status as it is."""
    reason = describe_failure(error)
    local_hint = local_api_down(base_url) if base_url else None
    if isinstance(error, IntegrationRemoved | IntegrationNotFound):
        reason = f"{piece.integration_id} was removed while it was syncing: nothing was written"
    elif isinstance(error, UpstreamError) and local_hint:
        reason = local_hint
    elif not _is_this_process(error):
        try:
            store.set_status(piece.integration_id, "error", reason)
        except IntegrationNotFound:
            reason = f"{piece.integration_id} was removed while it was syncing: {reason}"
    context.log.error(f"{piece}: {reason}")
    return dg.Failure(f"{piece.integration_id}: {reason}")


def _is_this_process(error: Exception) -> bool:
    """A failure of this process's environment (a master key that is missing, damaged or does
    not match the stored keys), not of the integration: its status stays as it is."""
    return isinstance(error, MasterKeyError)


def _sync(
    context: dg.AssetExecutionContext,
    piece: Slice,
    store: Registry,
    api: CostsApiResource,
    duckdb: DuckDBResource,
    staging_dir: Path,
) -> None:
    """A long slice (a backfill): streamed, loaded while it is fetched, on its own connection."""
    base_url = None
    try:
        integration, provider, base_url = _source(store, piece.integration_id)
        api_key = store.api_key(piece.integration_id)
        with api.client(provider, api_key, integration.base_url) as client:
            context.log.info(f"fetching {piece} from {provider.title}")
            synced = sync_slice(
                piece,
                provider,
                client,
                functools.partial(connect, duckdb.database),
                run_id=context.run.run_id,
                staging_dir=staging_dir,
                today=utc_today(),
                still_registered=lambda: _exists(store, piece.integration_id),
                schema_ready=True,  # by the step, on this database
            )
    except Exception as error:
        raise _failed(context, store, piece, error, base_url) from None
    context.log.info(synced.describe())
    store.mark_synced(piece.integration_id, datetime.now(UTC))


def _sync_short(
    context: dg.AssetExecutionContext,
    pieces: list[Slice],
    store: Registry,
    api: CostsApiResource,
    database: str,
    staging_dir: Path,
) -> None:
    """Short slices (a daily run): fetched a few at a time on threads (HTTP waits overlap; one
    integration's requests stay sequential), with their integrations' names, then written on
    one connection, in their order (see slice_batch). A failed fetch still writes the slices
    before it, as slice after slice did."""
    named: set[str] = set()
    jobs: list[tuple[Slice, bool]] = []
    for piece in pieces:
        jobs.append((piece, piece.integration_id not in named))
        named.add(piece.integration_id)
    pending: list[slice_batch.Prefetched] = []
    window = 2 * slice_batch.FETCH_THREADS
    with ThreadPoolExecutor(slice_batch.FETCH_THREADS, thread_name_prefix="grafient-fetch") as pool:
        for first in range(0, len(jobs), window):
            chunk = jobs[first : first + window]
            context.log.info(f"fetching {_describe(p for p, _ in chunk)}")
            started = [
                (piece, *_start_fetch(pool, piece, with_names, store, api))
                for piece, with_names in chunk
            ]
            for piece, future, base_url in started:
                try:
                    pending.append(future.result())
                except Exception as error:
                    for _, later, _ in started:
                        later.cancel()
                    _write_prefetched(context, pending, store, database, staging_dir)
                    raise _failed(context, store, piece, error, base_url) from None
            if slice_batch.full(pending):
                _write_prefetched(context, pending, store, database, staging_dir)
                pending = []
    _write_prefetched(context, pending, store, database, staging_dir)


def _describe(pieces: Iterable[Slice]) -> str:
    """One log line for a window of slices (a line each would be an event each)."""
    listed = list(pieces)
    if len(listed) == 1:
        return str(listed[0])
    dates = {piece.dates for piece in listed}
    when = f" {dates.pop()}" if len(dates) == 1 else ""
    return f"{len(listed)} slices{when}: {', '.join(p.integration_id for p in listed)}"


def _source(store: Registry, integration_id: str) -> tuple[Integration, Provider, str]:
    """The integration, its provider and the API base URL it syncs from."""
    integration = store.get(integration_id)
    provider = get_provider(integration.provider)
    return integration, provider, resolve_base_url(provider, integration.base_url)


def _start_fetch(
    pool: ThreadPoolExecutor,
    piece: Slice,
    with_names: bool,
    store: Registry,
    api: CostsApiResource,
) -> tuple[Future[slice_batch.Prefetched], str | None]:
    """The registry is read here (this thread); the fetch thread only speaks HTTP."""
    base_url = None
    try:
        integration, provider, base_url = _source(store, piece.integration_id)
        api_key = store.api_key(piece.integration_id)
    except Exception as error:
        failed: Future[slice_batch.Prefetched] = Future()
        failed.set_exception(error)
        return failed, base_url
    client = functools.partial(api.client, provider, api_key, integration.base_url)
    return pool.submit(slice_batch.fetch, client, piece, provider, with_names), base_url


def _write_prefetched(
    context: dg.AssetExecutionContext,
    pending: list[slice_batch.Prefetched],
    store: Registry,
    database: str,
    staging_dir: Path,
) -> None:
    """Each prefetched slice in its own transaction; then, for the integrations whose slices
    committed (even when a later one failed), their names and their mark as synced, each in
    one write for all of them."""
    if not pending:
        return
    written: list[slice_batch.Prefetched] = []
    try:
        with connect(database) as conn:
            lend = slice_batch.lent(conn)
            try:
                for fetched in pending:
                    _write_one(context, fetched, store, lend, staging_dir)
                    written.append(fetched)
            finally:
                _write_names(context, written, conn)
    finally:
        if written:
            store.mark_synced_many([f.piece.integration_id for f in written], datetime.now(UTC))


def _write_one(
    context: dg.AssetExecutionContext,
    fetched: slice_batch.Prefetched,
    store: Registry,
    lend: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    staging_dir: Path,
) -> None:
    piece = fetched.piece
    try:
        synced = sync_slice(
            piece,
            fetched.provider,
            slice_batch.Replayed(fetched),
            lend,
            run_id=context.run.run_id,
            staging_dir=staging_dir,
            today=utc_today(),
            still_registered=functools.partial(_exists, store, piece.integration_id),
            schema_ready=True,  # by the step, on this database
        )
    except Exception as error:
        raise _failed(context, store, piece, error, None) from None
    context.log.info(synced.describe())


def _write_names(
    context: dg.AssetExecutionContext,
    written: list[slice_batch.Prefetched],
    conn: duckdb.DuckDBPyConnection,
) -> None:
    for fetched in written:
        if fetched.names_error is not None:
            _names_skipped(context, fetched.piece.integration_id, fetched.names_error)
    names = [
        IntegrationNames(f.provider.name, f.piece.integration_id, f.names)
        for f in written
        if f.names is not None
    ]
    if names:
        refresh_names_of(names, datetime.now(UTC), conn)


def _refresh_names(
    context: dg.AssetExecutionContext,
    store: Registry,
    api: CostsApiResource,
    integration_id: str,
    database: str,
) -> None:
    """Project and API key names for an integration, read with its admin key: never a reason
    for a sync to fail (a key without permission for them gets a warning)."""
    integration = store.get(integration_id)
    provider = get_provider(integration.provider)
    try:
        key = store.api_key(integration.id)
        with api.client(provider, key, integration.base_url) as client:
            records, problem = slice_batch.read_names(client)
    except VaultError as error:
        records, problem = None, str(error)
    if records is None:
        _names_skipped(context, integration.id, problem)
        return
    with connect(database) as conn:
        refresh_names(conn, provider.name, integration.id, records, datetime.now(UTC))


def _names_skipped(context: dg.AssetExecutionContext, integration_id: str, why: str | None) -> None:
    context.log.warning(f"{integration_id}: names of projects and keys skipped: {why}")


def _exists(store: Registry, integration_id: str) -> bool:
    try:
        store.get(integration_id)
    except IntegrationNotFound:
        return False
    return True


@dg.multi_asset(
    name="openai_costs",
    specs=SPECS,
    check_specs=CHECK_SPECS,
    partitions_def=cost_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    can_subset=False,
    description="Fetch, load, normalize, roll up and check a range of days of one or more "
    "integrations, one transaction per integration.",
)
def openai_costs(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    costs_api: CostsApiResource,
    registry: RegistryResource,
):
    claim_run_worker(context)
    slices = slices_for(context.partition_keys)
    store = registry.open()
    tags = dict(context.run.tags)
    judged_on = plan_date(tags, utc_today())
    _validate(store, slices, judged_on)
    if tags.get(NOTE_TAG):
        context.log.info(tags[NOTE_TAG])
    with connect(duckdb.database) as conn:
        ensure_schema(conn)
        refresh_dim_integrations(conn, integration_rows(store))
    staging_dir, snapshot_path = registry.settings.staging_dir, registry.settings.snapshot_path
    try:
        streamed: list[str] = []
        for short, pieces in slice_batch.groups(slices):
            if short:
                _sync_short(context, pieces, store, costs_api, duckdb.database, staging_dir)
            else:
                _sync(context, pieces[0], store, costs_api, duckdb, staging_dir)
                streamed.append(pieces[0].integration_id)
        for integration_id in dict.fromkeys(streamed):
            _refresh_names(context, store, costs_api, integration_id, duckdb.database)
    except Exception:  # not on an interrupt: that process is asked to stop now
        _publish_after_failure(context, duckdb.database, snapshot_path)
        raise
    with connect(duckdb.database) as conn:
        yield from materializations(conn, slices)
        _publish(context, conn, snapshot_path)


def _publish(
    context: dg.AssetExecutionContext,
    warehouse: duckdb.DuckDBPyConnection | str,
    snapshot_path: Path,
) -> None:
    """The dashboard's snapshot, unless a later run of the same daily sync will publish it."""
    later = later_writer(context.instance, context.run)
    if later is not None:
        context.log.info(f"dashboard snapshot left to run {later}, which writes after this one")
        return
    publish_snapshot(warehouse, snapshot_path)


def _publish_after_failure(
    context: dg.AssetExecutionContext, database: str, snapshot_path: Path
) -> None:
    """What committed before the failure reaches the dashboard (when this run is its sync's
    last); a failure to publish is only a warning here, the sync's own error is the one."""
    try:
        _publish(context, database, snapshot_path)
    except Exception as error:
        context.log.warning(f"dashboard snapshot not published: {describe_failure(error)}")


cost_assets = [openai_costs]
