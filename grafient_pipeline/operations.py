"""What a user can do, shared by the CLI, the demo and (later) a web dashboard.

Each action returns values or raises a typed error whose message is one line a user can act
on; progress lines go to the `out` stream the caller passes, never straight to the terminal.
Presentation (tables, rounding for people) belongs to the caller.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from grafient_pipeline.plans import DateRange, backfill_window, parse_plan
from grafient_pipeline.settings import Settings

if TYPE_CHECKING:
    from grafient_pipeline.providers.base import ConnectionCheck, CostClient
    from grafient_pipeline.registry import Integration, Registry
    from grafient_pipeline.report import MonthReport
    from grafient_pipeline.runs import SyncSummary


class OperationError(Exception):
    """An action that cannot be done: its message is the one line a user sees."""


def open_registry(settings: Settings, warn: TextIO | None = None) -> Registry:
    """The registry of this home; a home readable by others gets a warning on `warn`."""
    from grafient_pipeline.registry import Registry
    from grafient_pipeline.vault import home_permission_warning

    warning = home_permission_warning(settings.home) if settings.home.exists() else None
    if warning:
        print(warning, file=sys.stderr if warn is None else warn)
    return Registry.from_settings(settings)


def list_integrations(settings: Settings) -> list[Integration]:
    return open_registry(settings).list()


def check_key(provider_name: str, key: str) -> ConnectionCheck:
    """Test Connection for a key not saved yet, against the provider's API (or the override in
    the environment, as `integrations add` stores it)."""
    from grafient_pipeline.providers import base_url_to_store, get_provider, resolve_base_url

    provider = get_provider(provider_name)
    key = key.strip()
    if not key:
        raise OperationError(
            f"no key given: paste a read-only {provider.title} admin key ({provider.key_prefix}...)"
        )
    base_url = resolve_base_url(provider, base_url_to_store(provider))
    with provider.client(key, base_url, max_attempts=3) as client:
        return client.test_connection()


def add_integration(
    settings: Settings, label: str, plan: str, key: str, provider: str = "openai"
) -> str:
    """Test Connection, then save the key encrypted with the API's base URL; returns the new
    integration's id."""
    from grafient_pipeline.providers import base_url_to_store, get_provider
    from grafient_pipeline.runs import _ensure_partition

    plan = parse_plan(plan)
    chosen = get_provider(provider)
    registry = open_registry(settings)
    check = check_key(chosen.name, key)
    if not check.ok:
        raise OperationError(f"Test Connection failed, nothing saved: {check.message}")
    integration = registry.add(
        label,
        plan,
        key,
        organization_id=check.organization_id,
        provider=chosen.name,
        base_url=base_url_to_store(chosen),
    )
    _ensure_partition(settings, integration.id)
    return integration.id


def test_integration(settings: Settings, integration_id: str) -> tuple[str, ConnectionCheck]:
    """Test Connection with the stored key; sets the status `active` or `error`."""
    from grafient_pipeline.providers import get_provider, local_api_down, resolve_base_url

    registry = open_registry(settings)
    integration = registry.get(integration_id)
    down = local_api_down(
        resolve_base_url(get_provider(integration.provider), integration.base_url)
    )
    if down:
        raise OperationError(f"{integration.id}: {down}")
    with _client(integration, registry.api_key(integration.id)) as client:
        check = client.test_connection()
    if not check.ok:
        registry.set_status(integration.id, "error", check.message)
        raise OperationError(f"{integration.id}: Test Connection failed: {check.message}")
    registry.set_status(integration.id, "active")
    if check.organization_id:
        registry.set_organization(integration.id, check.organization_id)
    return integration.id, check


def _client(integration: Integration, key: str) -> CostClient:
    from grafient_pipeline.providers import get_provider, resolve_base_url

    provider = get_provider(integration.provider)
    return provider.client(key, resolve_base_url(provider, integration.base_url))


def set_key(settings: Settings, integration_id: str, key: str) -> Integration:
    """Replace an integration's admin key: Test Connection first (at the integration's own API),
    the same organization required, the old key replaced atomically, status back to active."""
    registry = open_registry(settings)
    integration = registry.get(integration_id)
    with _client(integration, key) as client:
        check = client.test_connection()
    if not check.ok:
        raise OperationError(f"Test Connection failed, the old key stays: {check.message}")
    return registry.replace_key(integration.id, key, check.organization_id)


def remove_integration(settings: Settings, integration_id: str, *, purge: bool) -> str:
    """Delete the integration and its key (`purge`: its warehouse rows too); returns its id.

    The registry row goes first: a sync still running for it then refuses to commit (it checks
    the registry inside its transaction), so nothing is written after the purge. A purge that
    could not finish can be run again on the removed id.
    """
    from grafient_pipeline.instance import get_instance
    from grafient_pipeline.registry import IntegrationNotFound

    registry = open_registry(settings)
    try:
        integration_id = registry.get(integration_id).id
    except IntegrationNotFound:
        if not (purge and registry.is_retired(integration_id)):
            raise
    else:
        registry.remove(integration_id)
    instance = get_instance(settings)
    if instance.has_dynamic_partition("integrations", integration_id):
        instance.delete_dynamic_partition("integrations", integration_id)
    if purge:
        _purge_warehouse(settings, integration_id)
    return integration_id


def _purge_warehouse(settings: Settings, integration_id: str) -> None:
    from grafient_pipeline.console import say_waiting
    from grafient_pipeline.migrations.warehouse import ensure_schema
    from grafient_pipeline.sync import purge_integration
    from grafient_pipeline.warehouse import WarehouseBusyError, connect

    try:
        with connect(settings.warehouse, on_wait=say_waiting) as conn:
            ensure_schema(conn)
            purge_integration(conn, integration_id)
    except WarehouseBusyError as error:
        raise OperationError(
            f"removed {integration_id}, but its warehouse rows are not deleted yet ({error}); "
            f"run `grafient integrations remove {integration_id} --purge` again"
        ) from None


def set_plan(
    settings: Settings, integration_id: str, plan: str
) -> tuple[Integration, DateRange | None]:
    """Change the plan; returns the integration and the days an upgrade newly allows (None for
    the same window or a downgrade, which keeps the rows it has: the daily sync and backfills
    then use the smaller window)."""
    from grafient_pipeline.plans import upgrade_window
    from grafient_pipeline.sync import utc_today

    registry = open_registry(settings)
    before = registry.get(integration_id)
    integration = registry.set_plan(integration_id, parse_plan(plan))
    return integration, upgrade_window(before.backfilled_days, integration.plan, utc_today())


def backfill_range(
    settings: Settings, integration_id: str, dates: DateRange, reason: str, out: TextIO
) -> SyncSummary:
    """Backfill some days now, marked as requested first so the sensor does not repeat them."""
    from grafient_pipeline.plans import window_days
    from grafient_pipeline.runs import run_sync

    registry = open_registry(settings)
    integration = registry.get(integration_id)
    registry.mark_backfill_requested(integration.id, window_days(integration.plan))
    return run_sync(settings, registry, integration.id, dates, reason, out)


def sync_range(
    settings: Settings, integration_id: str, dates: DateRange, out: TextIO
) -> SyncSummary:
    """Force Sync of a date range (checked against the plan before any request)."""
    from grafient_pipeline.runs import run_sync

    return run_sync(settings, open_registry(settings), integration_id, dates, "force sync", out)


def run_backfill(settings: Settings, integration_id: str, out: TextIO) -> SyncSummary:
    """The plan window, marked as requested first so the onboarding sensor does not repeat it."""
    from grafient_pipeline.sync import utc_today

    integration = open_registry(settings).get(integration_id)
    window = backfill_window(integration.plan, utc_today())
    return backfill_range(settings, integration.id, window, "backfill", out)


def run_sql(
    settings: Settings, query: str, on_wait: Callable[[float], None] | None = None
) -> tuple[list[str], list[Sequence[object]]]:
    """Any SQL on the warehouse (a trusted-operator tool): column names and rows.

    `on_wait(seconds)` is called once if a sync holds the warehouse and we wait for it.
    """
    import duckdb

    from grafient_pipeline.migrations.warehouse import ensure_schema
    from grafient_pipeline.warehouse import connect

    if not query.strip():
        raise OperationError('no SQL given: for example grafient sql "SELECT 1"')
    with connect(settings.warehouse, on_wait=on_wait) as conn:
        ensure_schema(conn)
        try:
            cursor = conn.execute(query)
            if cursor is None:  # only comments or semicolons: nothing ran
                return [], []
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except duckdb.Error as error:
            raise OperationError(f"SQL failed: {error}") from None
    return columns, rows


def month_report(
    settings: Settings,
    dates: DateRange,
    integration_id: str | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> MonthReport | None:
    """A month of spend, read-only; None when there is no warehouse yet (none is created)."""
    import duckdb

    from grafient_pipeline.registry import ID_PATTERN
    from grafient_pipeline.report import month_report as build_report
    from grafient_pipeline.warehouse import connect

    if integration_id is not None and not ID_PATTERN.fullmatch(integration_id):
        raise OperationError(
            "not an integration id: ids are lowercase letters, digits and dashes; "
            "see `grafient integrations list`"
        )
    local = not settings.warehouse.startswith(("md:", "ducklake:"))
    if local and not Path(settings.warehouse).is_file():
        return None
    with connect(settings.warehouse, read_only=True, on_wait=on_wait) as conn:
        try:
            return build_report(conn, dates, integration_id)
        except duckdb.CatalogException:  # a warehouse no sync has written yet
            return None


def rotate_master_key(settings: Settings) -> int:
    """Re-encrypt every stored key under a new master key; returns how many."""
    from grafient_pipeline.vault import rotate_master_key_file

    return rotate_master_key_file(settings, open_registry(settings))
