"""The `grafient` command. Errors print one line and exit non-zero; keys are never shown."""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from datetime import date, timedelta

from grafient_pipeline import cli_intelligence, operations
from grafient_pipeline.console import (
    describe_sync,
    has_decimals,
    print_report,
    print_table,
    say_waiting,
)
from grafient_pipeline.dashboard import command as dashboard_command
from grafient_pipeline.demo import DEMO_EMULATOR_PORT
from grafient_pipeline.plans import PLANS, DateRange, PlanError, backfill_window
from grafient_pipeline.providers import DEFAULT_PROVIDER, PROVIDERS, UnknownProvider, get_provider
from grafient_pipeline.providers.base import Provider
from grafient_pipeline.redact import scrub
from grafient_pipeline.settings import Settings, SettingsError, load_settings

NO_TERMINAL = (
    "no terminal to read the key from: pipe it in with --key-stdin "
    "(for example: grafient integrations add --plan free --key-stdin < key.txt)"
)

HOW_TO_GET_DATA = (
    "Add an integration with `grafient integrations add --label L --plan free` (it backfills "
    "its plan window), or see one with sample data: `grafient demo --no-ui`"
)


class CliError(Exception):
    """A user-facing failure: its message is the one line we print."""


def _read_key(from_stdin: bool, provider: Provider) -> str:
    wanted = f"{provider.title} admin key ({provider.key_prefix}...)"
    if from_stdin:
        key = sys.stdin.readline().strip()
    elif not sys.stdin.isatty():
        raise CliError(NO_TERMINAL)
    else:
        try:
            key = getpass.getpass(f"{wanted}, input hidden: ").strip()
        except EOFError:
            key = ""
    if not key:
        raise CliError(f"no key given: paste a read-only {wanted}")
    return key


def _plan_name(text: str) -> str:
    """Plans as people write them (`Pro`, `FREE`): argparse then checks the choice."""
    return text.strip().lower()


def cmd_integrations_add(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.runs import find_webserver

    provider = get_provider(args.provider)
    key = _read_key(args.key_stdin, provider)
    integration_id = operations.add_integration(settings, args.label, args.plan, key, provider.name)
    print(integration_id)
    days = backfill_window(args.plan, date.today()).days
    if args.no_backfill:
        print(f"added; run its {days}-day backfill with: grafient backfill {integration_id}",
              file=sys.stderr)  # fmt: skip
    elif (webserver := find_webserver(settings)).ours:
        print(
            f"added; the onboarding sensor launches its {days}-day backfill within a minute: "
            f"{webserver.url}/runs",
            file=sys.stderr,
        )
    else:
        summary = operations.run_backfill(settings, integration_id, sys.stderr)
        print(describe_sync(summary), file=sys.stderr)
    return 0


def cmd_integrations_list(settings: Settings, args: argparse.Namespace) -> int:
    integrations = [i.public_dict() for i in operations.list_integrations(settings)]
    print(f"home: {settings.home} ({settings.home_source})", file=sys.stderr)
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
    from grafient_pipeline.runs import find_webserver

    integration, new_days = operations.set_plan(settings, args.id, args.plan)
    print(f"{integration.id}: plan {integration.plan}")
    if new_days is None:
        print(
            "no new days to backfill (rows outside a smaller window are kept; the daily sync "
            "and backfills use the plan's window)",
            file=sys.stderr,
        )
    elif (webserver := find_webserver(settings)).ours:
        print(f"the sensor backfills {new_days} within a minute: {webserver.url}/runs",
              file=sys.stderr)  # fmt: skip
    else:
        summary = operations.backfill_range(
            settings, integration.id, new_days, "plan upgrade", sys.stderr
        )
        print(describe_sync(summary), file=sys.stderr)
    return 0


def cmd_integrations_set_key(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.providers import get_provider

    integration = operations.open_registry(settings).get(args.id)
    key = _read_key(args.key_stdin, get_provider(integration.provider))
    updated = operations.set_key(settings, integration.id, key)
    print(f"{updated.id}: key replaced ({updated.key_hint}), Test Connection passed; status active")
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
    print(describe_sync(summary))
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    summary = operations.run_backfill(settings, args.id, sys.stdout)
    print(describe_sync(summary))
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    columns, rows = operations.run_sql(settings, args.query, on_wait=say_waiting)
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print_table(columns, rows)
        if has_decimals(rows):
            print("(decimals rounded to 2 places for reading; --csv prints them in full)")
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.report import empty_report, parse_month
    from grafient_pipeline.sync import utc_today

    dates = parse_month(args.month, utc_today())
    report = operations.month_report(settings, dates, args.integration, on_wait=say_waiting)
    if args.json:
        print(json.dumps((report or empty_report(dates, args.integration)).as_json(), indent=2))
    elif report is None:
        print(f"no data yet: {settings.warehouse_label} does not exist. {HOW_TO_GET_DATA}")
    elif report.is_empty:
        scope = f" for {args.integration}" if args.integration else ""
        print(
            f"no spend recorded in {report.month} (UTC){scope}. Sync those days with "
            f"`grafient sync ID --start {dates.start.isoformat()}`; "
            "`grafient integrations list` shows your integrations"
        )
    else:
        print_report(report)
    return 0


def cmd_emulator(settings: Settings, args: argparse.Namespace) -> int:
    import importlib

    emulator = importlib.import_module(get_provider(args.provider).emulator_module)
    own = argparse.ArgumentParser()
    emulator.add_emulator_arguments(own)
    defaults = own.parse_args([])
    for name in ("port", "results_per_day"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    return emulator.run_from_args(args)


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    count = operations.rotate_master_key(settings)
    print(f"re-encrypted {count} key(s) under a new master key; back up {settings.master_key_path}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.demo import run_demo

    return run_demo(settings, ui=not args.no_ui, port=args.port, emulator_port=args.emulator_port)


ENVIRONMENT = """\
environment:
  GRAFIENT_HOME             the data folder: registry, master key, warehouse, Dagster instance
                            (default: the nearest .grafient folder in the current folder or
                            above, else ~/.grafient)
  GRAFIENT_MASTER_KEY       the master key (base64, 32 bytes) that encrypts the stored admin
                            keys (default: GRAFIENT_HOME/master.key, created on first use)
  GRAFIENT_OPENAI_BASE_URL  the OpenAI API base URL (default: https://api.openai.com/v1; the
                            emulator prints its own)
  GRAFIENT_WAREHOUSE        the DuckDB warehouse file (default: GRAFIENT_HOME/warehouse.duckdb),
                            or ducklake:postgresql://USER:PASSWORD@HOST:5432/DB for a DuckLake
                            with several writers (needs the `ducklake` extra)
  GRAFIENT_WAREHOUSE_DATA_PATH  where a new DuckLake keeps its Parquet files (default:
                            GRAFIENT_HOME/lake/; shared storage when several machines write)
  GRAFIENT_RESYNC_DAYS      days the daily schedule re-pulls, for restated costs (default 3)
  GRAFIENT_SYNC_BATCH       integrations per scheduled run (default 50)
  GRAFIENT_DAGSTER_URL      the Dagster webserver that syncs are submitted to when it is up
                            (default: http://127.0.0.1:3000; otherwise they run in-process)
  GRAFIENT_DAGSTER_POSTGRES_URL  Dagster's runs, events and schedules in PostgreSQL:
                            postgresql://USER:PASSWORD@HOST:5432/DB (default: SQLite files
                            in GRAFIENT_HOME/dagster_home; needs the `postgres` extra)
  GRAFIENT_REGISTRY_URL     the registry (integrations, keys, budgets, channels) in PostgreSQL:
                            postgresql://USER:PASSWORD@HOST:5432/DB (default:
                            GRAFIENT_HOME/registry.db; every machine needs the same master key)
"""

TOP_EXAMPLES = """\
examples:
  grafient demo                                  the emulator, two demo integrations, the UI
  grafient integrations add --label Prod --plan pro --key-stdin < key.txt
  grafient report --month 2026-11
  grafient sql "SELECT * FROM v_month_to_date ORDER BY amount_usd DESC"
"""


def _command(
    commands: argparse._SubParsersAction, name: str, help_text: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example."""
    return commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the integration's id (see `grafient integrations list`)")


def _add_plan_option(parser: argparse.ArgumentParser, name: str, required: bool) -> None:
    kwargs = {"required": required} if name.startswith("-") else {}
    parser.add_argument(
        name,
        type=_plan_name,
        choices=PLANS,
        metavar="PLAN",
        help=f"{' | '.join(PLANS)} (any case): how many days back it may sync "
        "(Free 30, Pro and Ultimate 180)",
        **kwargs,
    )


def _must_exist(args: argparse.Namespace, settings: Settings) -> bool:
    """Only commands that add something create a home, unless GRAFIENT_HOME names it: never a
    new, empty home found by accident from another folder."""
    return not getattr(args, "creates_home", False) and settings.home_source != "GRAFIENT_HOME"


def _no_home(settings: Settings) -> str:
    return (
        f"no Grafient home yet ({settings.home}, {settings.home_source}; a `.grafient` folder in "
        "this folder or above is used first): add an integration (`grafient integrations add`), "
        "run `grafient demo`, or set GRAFIENT_HOME to your home"
    )


def _home_in_use() -> str:
    try:
        settings = load_settings()
    except SettingsError:
        return ""
    state = "" if settings.home.exists() else ", not created yet"
    return f"home in use: {settings.home} ({settings.home_source}{state})\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grafient",
        description="Exact OpenAI spend, from OpenAI's own billing figures.",
        epilog=f"{TOP_EXAMPLES}\n{ENVIRONMENT}\n{_home_in_use()}\n"
        "`grafient COMMAND --help` describes a command and its options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do"
    )
    _add_integrations(commands)
    cli_intelligence.add_commands(commands)

    sync = _command(
        commands, "sync", "Force Sync: fetch a date range again (default: yesterday and today)",
        "grafient sync acme-prod --start 2026-11-01 --end 2026-11-07",
    )  # fmt: skip
    _add_id(sync)
    sync.add_argument("--start", metavar="DATE", help="first date, YYYY-MM-DD (UTC)")
    sync.add_argument("--end", metavar="DATE", help="last date, YYYY-MM-DD (UTC), at most today")
    sync.set_defaults(handler=cmd_sync)
    backfill = _command(
        commands, "backfill", "sync the whole plan window now", "grafient backfill acme-prod"
    )
    _add_id(backfill)
    backfill.set_defaults(handler=cmd_backfill)

    report = _command(
        commands, "report",
        "a month of spend: per integration, top models, token types, day by day",
        "grafient report --month 2026-11 --integration acme-prod",
    )  # fmt: skip
    report.add_argument("--month", metavar="YYYY-MM", help="the month (default: this UTC month)")
    report.add_argument("--integration", metavar="ID", help="one integration only (default: all)")
    report.add_argument(
        "--json", action="store_true", help="print JSON with every decimal place instead"
    )
    report.set_defaults(handler=cmd_report)

    sql = _command(
        commands, "sql", "run SQL on the warehouse (trusted operators only)",
        'grafient sql "SELECT cost_date, sum(amount_usd) FROM fct_costs GROUP BY 1 ORDER BY 1"',
    )  # fmt: skip
    sql.add_argument("query", help="any DuckDB SQL (it can write too: trusted operators only)")
    sql.add_argument(
        "--csv", action="store_true", help="print CSV, every decimal place, instead of a table"
    )
    sql.set_defaults(handler=cmd_sql)

    from grafient_pipeline.providers.emulator_server import add_common_arguments

    emulator = _command(
        commands, "emulator", "a local provider cost API (OpenAI, Anthropic) for demos and tests",
        "grafient emulator --port 8787 --org org-acme=sk-admin-acme-0123456789abcdef",
    )  # fmt: skip
    emulator.add_argument(
        "--provider",
        default=DEFAULT_PROVIDER,
        type=str.lower,
        choices=sorted(PROVIDERS),
        help=f"whose API to emulate (default {DEFAULT_PROVIDER})",
    )
    # The provider's own defaults (port, rows a day) fill what is not given: see cmd_emulator.
    add_common_arguments(emulator, key_prefix="sk-", port=None, results_per_day=None)
    emulator.set_defaults(handler=cmd_emulator, creates_home=True)

    keys = _command(commands, "keys", "master key operations", "grafient keys rotate")
    keys_sub = keys.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="the operation"
    )
    rotate = _command(
        keys_sub, "rotate", "re-encrypt every stored key under a new master key",
        "grafient keys rotate",
    )  # fmt: skip
    rotate.set_defaults(handler=cmd_keys_rotate)

    demo = _command(
        commands, "demo", "emulator + two demo integrations + their backfills + the Dagster UI",
        "grafient demo --no-ui",
    )  # fmt: skip
    demo.add_argument("--no-ui", action="store_true", help="stop after the backfills and summary")
    demo.add_argument(
        "--port", type=int, default=3000, metavar="PORT", help="Dagster UI port (default 3000)"
    )
    demo.add_argument(
        "--emulator-port", type=int, default=DEMO_EMULATOR_PORT, metavar="PORT",
        help=f"the emulator's port (default {DEMO_EMULATOR_PORT}, fixed so that a restarted demo "
        "finds the emulator its integrations use; 0: a free port)",
    )  # fmt: skip
    demo.set_defaults(handler=cmd_demo, creates_home=True)
    dashboard_command.add_commands(commands)
    return parser


def _add_integrations(commands: argparse._SubParsersAction) -> None:
    integrations = _command(
        commands,
        "integrations",
        "connect provider organizations (OpenAI, Anthropic)",
        "grafient integrations list",
    )
    sub = integrations.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="the operation"
    )
    add = _command(
        sub, "add", "test an admin key, then save it encrypted and backfill its plan window",
        "grafient integrations add --label 'Acme Prod' --plan pro --key-stdin < key.txt",
    )  # fmt: skip
    add.add_argument(
        "--provider",
        default=DEFAULT_PROVIDER,
        type=str.lower,
        choices=sorted(PROVIDERS),
        help=f"whose costs (default {DEFAULT_PROVIDER})",
    )
    add.add_argument("--label", default="", help="a name for this organization (default: its id)")
    _add_plan_option(add, "--plan", required=True)
    add.add_argument(
        "--key-stdin",
        action="store_true",
        help="read the key from standard input (default: ask for it, hidden, on the terminal)",
    )
    add.add_argument(
        "--no-backfill",
        action="store_true",
        help="only save it (by default the plan-window backfill runs now, or through the "
        "onboarding sensor when a Dagster webserver is up)",
    )
    add.set_defaults(handler=cmd_integrations_add, creates_home=True)
    listing = _command(
        sub, "list", "integrations, their status and masked keys", "grafient integrations list"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array instead")
    listing.set_defaults(handler=cmd_integrations_list)
    test = _command(
        sub, "test", "re-run Test Connection with the stored key",
        "grafient integrations test acme-prod",
    )  # fmt: skip
    _add_id(test)
    test.set_defaults(handler=cmd_integrations_test)
    remove = _command(
        sub, "remove", "delete an integration and its key",
        "grafient integrations remove acme-prod --purge",
    )  # fmt: skip
    _add_id(remove)
    remove.add_argument("--purge", action="store_true", help="also delete its warehouse rows")
    remove.set_defaults(handler=cmd_integrations_remove)
    set_plan = _command(
        sub, "set-plan", "change the plan (an upgrade backfills the new days)",
        "grafient integrations set-plan acme-prod Pro",
    )  # fmt: skip
    _add_id(set_plan)
    _add_plan_option(set_plan, "plan", required=True)
    set_plan.set_defaults(handler=cmd_integrations_set_plan)
    set_key = _command(
        sub, "set-key", "replace the admin key (Test Connection first, same organization)",
        "grafient integrations set-key acme-prod --key-stdin < new-key.txt",
    )  # fmt: skip
    _add_id(set_key)
    set_key.add_argument(
        "--key-stdin",
        action="store_true",
        help="read the key from standard input (default: ask for it, hidden, on the terminal)",
    )
    set_key.set_defaults(handler=cmd_integrations_set_key)


def _known_errors() -> tuple[type[BaseException], ...]:
    from grafient_pipeline.demo import DemoError
    from grafient_pipeline.providers.base import CostsApiError
    from grafient_pipeline.registry import RegistryError
    from grafient_pipeline.report import ReportError
    from grafient_pipeline.runs import SyncError
    from grafient_pipeline.vault import VaultError
    from grafient_pipeline.warehouse import WarehouseBusyError

    return (
        CliError,
        operations.OperationError,
        UnknownProvider,
        DemoError,
        SettingsError,
        PlanError,
        CostsApiError,
        RegistryError,
        ReportError,
        VaultError,
        SyncError,
        WarehouseBusyError,
        OSError,
    )


def _quiet_library_warnings() -> None:
    """Dagster's beta/preview notices are for developers, not for people running the CLI."""
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _reader_went_away() -> int:
    """`grafient sql ... | head`: stop quietly, as Unix tools do, with SIGPIPE's exit status.

    What is still buffered for stdout goes to /dev/null, so the interpreter's final flush
    cannot fail with a second message.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # no file descriptor: nothing to flush
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_library_warnings()
    try:
        args = build_parser().parse_args(argv)
    except BrokenPipeError:  # `grafient --help | head -1`
        return _reader_went_away()
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = load_settings()
        if _must_exist(args, settings) and not settings.home.exists():
            raise CliError(_no_home(settings))
        return handler(settings, args)
    except BrokenPipeError:
        return _reader_went_away()
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
