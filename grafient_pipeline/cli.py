"""The `grafient` command. Errors print one line and exit non-zero; keys are never shown."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import TextIO

from grafient_pipeline.plans import PLANS, DateRange, PlanError, backfill_window, parse_plan
from grafient_pipeline.settings import Settings, SettingsError, load_settings

_SECRET = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")


class CliError(Exception):
    """A user-facing failure: its message is the one line we print."""


def scrub(text: str) -> str:
    return _SECRET.sub("sk-***", text)


def _registry(settings: Settings):
    from grafient_pipeline.registry import Registry
    from grafient_pipeline.vault import home_permission_warning

    warning = home_permission_warning(settings.home) if settings.home.exists() else None
    if warning:
        print(warning, file=sys.stderr)
    return Registry.from_settings(settings)


def say_waiting(seconds: float) -> None:
    print(
        f"grafient: the warehouse is busy (a sync is writing it); waiting up to {seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def _read_key(from_stdin: bool) -> str:
    if from_stdin:
        key = sys.stdin.readline().strip()
    else:
        key = getpass.getpass("OpenAI admin key (sk-admin-..., input hidden): ").strip()
    if not key:
        raise CliError("no key given: paste a read-only admin key (sk-admin-...)")
    return key


def add_integration(settings: Settings, label: str, plan: str, key: str) -> str:
    """Test Connection, then save. Shared by `integrations add` and the demo."""
    from grafient_pipeline.openai.client import CostsClient
    from grafient_pipeline.runs import _ensure_partition

    plan = parse_plan(plan)
    registry = _registry(settings)
    with CostsClient(key, settings.openai_base_url, max_attempts=3) as client:
        check = client.test_connection()
    if not check.ok:
        raise CliError(f"Test Connection failed, nothing saved: {check.message}")
    integration = registry.add(label, plan, key, organization_id=check.organization_id)
    _ensure_partition(settings, integration.id)
    return integration.id


def cmd_integrations_add(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.runs import dagster_url, webserver_is_up

    integration_id = add_integration(settings, args.label, args.plan, _read_key(args.key_stdin))
    print(integration_id)
    days = backfill_window(args.plan, date.today()).days
    if args.no_backfill:
        print(f"added; run its {days}-day backfill with: grafient backfill {integration_id}",
              file=sys.stderr)  # fmt: skip
    elif webserver_is_up(dagster_url()):
        print(
            f"added; the onboarding sensor launches its {days}-day backfill within a minute: "
            f"{dagster_url()}/runs",
            file=sys.stderr,
        )
    else:
        _run_backfill(settings, integration_id, sys.stderr)
    return 0


def cmd_integrations_list(settings: Settings, args: argparse.Namespace) -> int:
    integrations = [i.public_dict() for i in _registry(settings).list()]
    if args.json:
        print(json.dumps(integrations, indent=2))
        return 0
    if not integrations:
        print("no integrations yet: grafient integrations add --label L --plan free")
        return 0
    columns = ["id", "label", "plan", "status", "last_synced_at", "key_hint", "last_error"]
    _print_table(columns, [[i.get(c) for c in columns] for i in integrations])
    return 0


def cmd_integrations_test(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.openai.client import CostsClient

    registry = _registry(settings)
    integration = registry.get(args.id)
    with CostsClient(registry.api_key(integration.id), settings.openai_base_url) as client:
        check = client.test_connection()
    if check.ok:
        registry.set_status(integration.id, "active")
        if check.organization_id:
            registry.set_organization(integration.id, check.organization_id)
        print(f"{integration.id}: connection OK ({check.message})")
        return 0
    registry.set_status(integration.id, "error", check.message)
    raise CliError(f"{integration.id}: Test Connection failed: {check.message}")


def cmd_integrations_remove(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.instance import get_instance

    registry = _registry(settings)
    integration = registry.get(args.id)
    if args.purge:
        _purge_warehouse(settings, integration.id)
    registry.remove(integration.id)
    instance = get_instance(settings)
    if instance.has_dynamic_partition("integrations", integration.id):
        instance.delete_dynamic_partition("integrations", integration.id)
    kept = "its warehouse rows were deleted" if args.purge else "its warehouse rows stay"
    print(f"removed {integration.id} and its key; {kept}")
    return 0


def _purge_warehouse(settings: Settings, integration_id: str) -> None:
    from grafient_pipeline.migrations.warehouse import ensure_schema
    from grafient_pipeline.warehouse import connect, transaction

    tables = ["raw_openai_costs", "fct_costs", "rollup_model_daily", "rollup_token_type_daily"]
    with connect(settings.warehouse) as conn:
        ensure_schema(conn)
        with transaction(conn):
            for table in tables:
                conn.execute(f"DELETE FROM {table} WHERE integration_id = ?", [integration_id])


def cmd_integrations_set_plan(settings: Settings, args: argparse.Namespace) -> int:
    integration = _registry(settings).set_plan(args.id, parse_plan(args.plan))
    print(f"{integration.id}: plan {integration.plan}")
    return 0


def _parse_date(text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"bad date {text!r}: use YYYY-MM-DD") from None


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.runs import run_sync
    from grafient_pipeline.sync import utc_today

    today = utc_today()
    dates = DateRange(
        _parse_date(args.start, today - timedelta(days=1)), _parse_date(args.end, today)
    )
    summary = run_sync(settings, _registry(settings), args.id, dates, "force sync")
    print(summary.describe())
    return 0


def _run_backfill(settings: Settings, integration_id: str, out: TextIO) -> None:
    """The plan window, marked as requested first so the onboarding sensor does not repeat it."""
    from grafient_pipeline.runs import run_sync
    from grafient_pipeline.sync import utc_today

    registry = _registry(settings)
    integration = registry.get(integration_id)
    window = backfill_window(integration.plan, utc_today())
    registry.mark_backfill_requested(integration.id, window.days)
    summary = run_sync(settings, registry, integration.id, window, "backfill", out)
    print(summary.describe(), file=out)


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    _run_backfill(settings, args.id, sys.stdout)
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb

    from grafient_pipeline.migrations.warehouse import ensure_schema
    from grafient_pipeline.warehouse import connect

    with connect(settings.warehouse, on_wait=say_waiting) as conn:
        ensure_schema(conn)
        try:
            cursor = conn.execute(args.query)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except duckdb.Error as error:
            raise CliError(f"SQL failed: {error}") from None
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        _print_table(columns, rows)
    return 0


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")


def cmd_emulator(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.openai.emulator import run_from_args

    return run_from_args(args)


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.vault import rotate_master_key_file

    count = rotate_master_key_file(settings, _registry(settings))
    print(f"re-encrypted {count} key(s) under a new master key; back up {settings.master_key_path}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.demo import run_demo

    return run_demo(settings, ui=not args.no_ui, port=args.port, emulator_port=args.emulator_port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grafient", description="Exact OpenAI spend, from OpenAI's own billing figures."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    integrations = commands.add_parser("integrations", help="connect OpenAI organizations")
    sub = integrations.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="test an admin key, then save it encrypted")
    add.add_argument("--label", default="", help="a name for this organization")
    add.add_argument("--plan", required=True, choices=PLANS)
    add.add_argument("--key-stdin", action="store_true", help="read the key from standard input")
    add.add_argument(
        "--no-backfill",
        action="store_true",
        help="only save it (by default the plan-window backfill runs now, or through the "
        "onboarding sensor when a Dagster webserver is up)",
    )
    add.set_defaults(handler=cmd_integrations_add)
    listing = sub.add_parser("list", help="integrations, their status and masked keys")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_integrations_list)
    test = sub.add_parser("test", help="re-run Test Connection with the stored key")
    test.add_argument("id")
    test.set_defaults(handler=cmd_integrations_test)
    remove = sub.add_parser("remove", help="delete an integration and its key")
    remove.add_argument("id")
    remove.add_argument("--purge", action="store_true", help="also delete its warehouse rows")
    remove.set_defaults(handler=cmd_integrations_remove)
    set_plan = sub.add_parser("set-plan", help="change the plan (an upgrade backfills new days)")
    set_plan.add_argument("id")
    set_plan.add_argument("plan", choices=PLANS)
    set_plan.set_defaults(handler=cmd_integrations_set_plan)

    sync = commands.add_parser("sync", help="Force Sync (default: yesterday and today)")
    sync.add_argument("id")
    sync.add_argument("--start", help="first date, YYYY-MM-DD (UTC)")
    sync.add_argument("--end", help="last date, YYYY-MM-DD (UTC)")
    sync.set_defaults(handler=cmd_sync)
    backfill = commands.add_parser("backfill", help="sync the whole plan window now")
    backfill.add_argument("id")
    backfill.set_defaults(handler=cmd_backfill)

    sql = commands.add_parser("sql", help="run SQL on the warehouse (trusted operators only)")
    sql.add_argument("query")
    sql.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    sql.set_defaults(handler=cmd_sql)

    from grafient_pipeline.openai.emulator import add_emulator_arguments

    emulator = commands.add_parser("emulator", help="a local OpenAI Costs API for demos and tests")
    add_emulator_arguments(emulator)
    emulator.set_defaults(handler=cmd_emulator)

    keys = commands.add_parser("keys", help="master key operations")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = keys_sub.add_parser(
        "rotate", help="re-encrypt every stored key under a new master key"
    )
    rotate.set_defaults(handler=cmd_keys_rotate)

    demo = commands.add_parser("demo", help="emulator + two demo integrations + the Dagster UI")
    demo.add_argument("--no-ui", action="store_true", help="stop after the backfills and summary")
    demo.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    demo.add_argument("--emulator-port", type=int, default=0, help="default: a free port")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from grafient_pipeline.demo import DemoError
    from grafient_pipeline.openai.client import CostsApiError
    from grafient_pipeline.registry import RegistryError
    from grafient_pipeline.runs import SyncError
    from grafient_pipeline.vault import VaultError
    from grafient_pipeline.warehouse import WarehouseBusyError

    return (
        CliError,
        DemoError,
        SettingsError,
        PlanError,
        CostsApiError,
        RegistryError,
        VaultError,
        SyncError,
        WarehouseBusyError,
        OSError,
    )


def _quiet_library_warnings() -> None:
    """Dagster's beta/preview notices are for developers, not for people running the CLI."""
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_library_warnings()
    args = build_parser().parse_args(argv)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(load_settings(), args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, never a traceback, never a key
        known = isinstance(error, _known_errors())
        prefix = "error" if known else f"unexpected error ({type(error).__name__})"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"grafient: {prefix}: {scrub(message)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
