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

from grafient_pipeline import operations
from grafient_pipeline.console import print_table, say_waiting
from grafient_pipeline.plans import PLANS, DateRange, PlanError, backfill_window
from grafient_pipeline.settings import Settings, SettingsError, load_settings

_SECRET = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")


class CliError(Exception):
    """A user-facing failure: its message is the one line we print."""


def scrub(text: str) -> str:
    return _SECRET.sub("sk-***", text)


def _read_key(from_stdin: bool) -> str:
    if from_stdin:
        key = sys.stdin.readline().strip()
    else:
        key = getpass.getpass("OpenAI admin key (sk-admin-..., input hidden): ").strip()
    if not key:
        raise CliError("no key given: paste a read-only admin key (sk-admin-...)")
    return key


def cmd_integrations_add(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.runs import dagster_url, webserver_is_up

    key = _read_key(args.key_stdin)
    integration_id = operations.add_integration(settings, args.label, args.plan, key)
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
        summary = operations.run_backfill(settings, integration_id, sys.stderr)
        print(summary.describe(), file=sys.stderr)
    return 0


def cmd_integrations_list(settings: Settings, args: argparse.Namespace) -> int:
    integrations = [i.public_dict() for i in operations.list_integrations(settings)]
    if args.json:
        print(json.dumps(integrations, indent=2))
        return 0
    if not integrations:
        print("no integrations yet: grafient integrations add --label L --plan free")
        return 0
    columns = ["id", "label", "plan", "status", "last_synced_at", "key_hint", "last_error"]
    print_table(columns, [[i.get(c) for c in columns] for i in integrations])
    return 0


def cmd_integrations_test(settings: Settings, args: argparse.Namespace) -> int:
    integration_id, check = operations.test_integration(settings, args.id)
    print(f"{integration_id}: connection OK ({check.message})")
    return 0


def cmd_integrations_remove(settings: Settings, args: argparse.Namespace) -> int:
    integration_id = operations.remove_integration(settings, args.id, purge=args.purge)
    kept = "its warehouse rows were deleted" if args.purge else "its warehouse rows stay"
    print(f"removed {integration_id} and its key; {kept}")
    return 0


def cmd_integrations_set_plan(settings: Settings, args: argparse.Namespace) -> int:
    integration = operations.set_plan(settings, args.id, args.plan)
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
    from grafient_pipeline.sync import utc_today

    today = utc_today()
    dates = DateRange(
        _parse_date(args.start, today - timedelta(days=1)), _parse_date(args.end, today)
    )
    summary = operations.sync_range(settings, args.id, dates, sys.stdout)
    print(summary.describe())
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    summary = operations.run_backfill(settings, args.id, sys.stdout)
    print(summary.describe())
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    columns, rows = operations.run_sql(settings, args.query, on_wait=say_waiting)
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(columns, rows)
    return 0


def cmd_emulator(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.openai.emulator import run_from_args

    return run_from_args(args)


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    count = operations.rotate_master_key(settings)
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
        operations.OperationError,
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
