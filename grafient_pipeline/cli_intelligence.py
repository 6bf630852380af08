"""`grafient budgets ...` and `grafient alerts ...`: budgets and alert channels in the registry.

Secrets (webhook URLs, signing secrets, SMTP passwords) are read from standard input, stored
encrypted, and never printed again: listings show hosts and addresses only.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from grafient_pipeline import operations
from grafient_pipeline.console import money, print_table
from grafient_pipeline.settings import Settings


def _error(message: str) -> operations.OperationError:
    return operations.OperationError(message)


def _read_secret(what: str) -> str:
    value = sys.stdin.readline().strip()
    if not value:
        raise _error(f"nothing on standard input: pipe the {what} in (it is never shown again)")
    return value


# --- budgets -------------------------------------------------------------------------------


def cmd_budgets_add(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import add_budget, parse_thresholds, parse_usd

    budget = add_budget(
        operations.open_registry(settings), args.name, parse_usd(args.monthly),
        parse_thresholds(args.thresholds), integration_id=args.integration,
        provider=args.provider, project_id=args.project, model=args.model,
    )  # fmt: skip
    marks = ", ".join(f"{t}%" for t in budget.thresholds)
    print(
        f"budget {budget.name!r}: {money(budget.monthly_usd)} USD a month on {budget.scope}; "
        f"alerts at {marks} and when the forecast is on track to exceed it"
    )
    return 0


def cmd_budgets_list(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import list_budgets

    budgets = list_budgets(operations.open_registry(settings))
    if args.json:
        rows = [
            {"name": b.name, "monthly_usd": str(b.monthly_usd), "thresholds": list(b.thresholds),
             "integration_id": b.integration_id, "provider": b.provider,
             "project_id": b.project_id, "model": b.model}
            for b in budgets
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    if not budgets:
        print("no budgets yet: grafient budgets add NAME --monthly USD")
        return 0
    print_table(
        ["name", "monthly_usd", "scope", "thresholds"],
        [[b.name, b.monthly_usd, b.scope, ",".join(map(str, b.thresholds))] for b in budgets],
    )
    return 0


def cmd_budgets_remove(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import remove_budget

    remove_budget(operations.open_registry(settings), args.name)
    print(f"removed budget {args.name!r}")
    return 0


# --- alerts --------------------------------------------------------------------------------


def _channel_from_args(args: argparse.Namespace) -> tuple[str, dict, dict]:
    from grafient_pipeline.intelligence import channels

    try:
        if args.slack_webhook_stdin:
            url = channels.check_url(_read_secret("Slack webhook URL"), https_only=True)
            return "slack", {"host": channels.urlsplit(url).hostname}, {"url": url}
        if args.webhook_url:
            url = channels.check_url(args.webhook_url)
            if not args.secret_stdin:
                raise _error("--webhook-url needs --secret-stdin: the shared signing secret")
            secret = _read_secret("signing secret")
            return "webhook", {"host": channels.urlsplit(url).hostname}, {
                "url": url, "secret": secret}  # fmt: skip
        host, port = channels.parse_host_port(args.smtp)
        if not args.sender or not args.to:
            raise _error("--smtp needs --from ADDR and --to ADDR[,ADDR]")
        sender = channels.check_addresses(args.sender, "--from")
        if len(sender) != 1:
            raise _error("--from takes one address")
        settings = {"host": host, "port": port, "from": sender[0],
                    "to": channels.check_addresses(args.to, "--to"), "user": args.user}  # fmt: skip
        if args.password_stdin and not args.user:
            raise _error("--password-stdin needs --user U")
        password = _read_secret("SMTP password") if args.password_stdin else ""
        return "email", settings, {"password": password}
    except channels.ChannelError as error:
        raise _error(str(error)) from None


def cmd_alerts_add_channel(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import add_channel

    kind, public, secrets = _channel_from_args(args)
    info = add_channel(
        operations.open_registry(settings), args.name, kind, public, secrets, digest=args.digest
    )
    digest = "; a daily digest at 09:00 UTC too" if info.digest else ""
    print(f"channel {info.name!r}: {info.target}{digest}. Try it: grafient alerts test {info.name}")
    return 0


def cmd_alerts_list(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import list_channels

    channels = list_channels(operations.open_registry(settings))
    if args.json:
        print(json.dumps([c.public_dict() for c in channels], indent=2))
        return 0
    if not channels:
        print("no alert channels yet: grafient alerts add-channel NAME --slack-webhook-stdin")
        return 0
    columns = ["name", "kind", "target", "digest", "status", "last_sent_at", "last_error"]
    print_table(columns, [[c.public_dict()[k] for k in columns] for c in channels])
    return 0


def cmd_alerts_test(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.channels import send
    from grafient_pipeline.intelligence.messages import AlertMessage
    from grafient_pipeline.intelligence.store import (
        get_channel_info,
        load_channel,
        set_channel_status,
    )

    registry = operations.open_registry(settings)
    info = get_channel_info(registry, args.name)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    message = AlertMessage(
        key=f"test:{info.name}:{stamp}",
        kind="test",
        title="Grafient test alert",
        text=f"This is a test of alert channel {info.name!r}: budget and anomaly alerts arrive "
        "here.",
    )
    delivery = send(load_channel(registry, info.id), message)
    if delivery.ok:
        set_channel_status(registry, info.id, "active")
        print(f"{info.name}: delivered ({delivery.detail}, {delivery.attempts} attempt(s))")
        return 0
    if delivery.permanent:
        set_channel_status(registry, info.id, "error", delivery.detail)
        raise _error(f"{info.name}: not delivered: {delivery.detail}; fix it, remove and add the "
                     "channel again")  # fmt: skip
    raise _error(f"{info.name}: not delivered after {delivery.attempts} attempts: "
                 f"{delivery.detail}; try again later")  # fmt: skip


def cmd_alerts_remove(settings: Settings, args: argparse.Namespace) -> int:
    from grafient_pipeline.intelligence.store import remove_channel

    remove_channel(operations.open_registry(settings), args.name)
    print(f"removed alert channel {args.name!r} and its secrets")
    return 0


# --- parsers -------------------------------------------------------------------------------


def _command(sub, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `budgets` and `alerts` on the top-level `grafient` parser."""
    _add_budgets(commands)
    _add_alerts(commands)


def _add_budgets(commands: argparse._SubParsersAction) -> None:
    budgets = _command(commands, "budgets", "monthly budgets with alerts at thresholds",
                       "grafient budgets list")  # fmt: skip
    sub = budgets.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="the operation"
    )
    add = _command(
        sub,
        "add",
        "add a monthly budget (alerts at 50, 80, 100 % by default)",
        "grafient budgets add research --monthly 2500 --integration acme-research",
    )
    add.add_argument("name", help="a name for the budget")
    add.add_argument("--monthly", required=True, metavar="USD", help="US dollars a month")
    add.add_argument("--integration", metavar="ID", help="only this integration's spend")
    add.add_argument("--provider", metavar="P", help="only this provider's spend (openai, ...)")
    add.add_argument("--project", metavar="ID", help="only this project's spend (project id)")
    add.add_argument("--model", metavar="M", help="only this model's spend (as in fct_costs)")
    add.add_argument(
        "--thresholds", metavar="50,80,100", help="percents that alert (default 50,80,100)"
    )
    add.set_defaults(handler=cmd_budgets_add)
    listing = _command(sub, "list", "budgets and their filters", "grafient budgets list --json")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead")
    listing.set_defaults(handler=cmd_budgets_list)
    remove = _command(sub, "remove", "delete a budget", "grafient budgets remove research")
    remove.add_argument("name", help="the budget's name")
    remove.set_defaults(handler=cmd_budgets_remove)


def _add_alerts(commands: argparse._SubParsersAction) -> None:
    alerts = _command(commands, "alerts", "where budget and anomaly alerts go",
                      "grafient alerts list")  # fmt: skip
    sub = alerts.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="the operation"
    )
    add = _command(
        sub, "add-channel", "add a Slack webhook, a signed JSON webhook or an SMTP email channel",
        "grafient alerts add-channel ops --slack-webhook-stdin < slack-url.txt",
    )  # fmt: skip
    add.add_argument("name", help="a name for the channel")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--slack-webhook-stdin",
        action="store_true",
        help="read a Slack incoming webhook URL from standard input",
    )
    where.add_argument(
        "--webhook-url",
        metavar="URL",
        help="POST signed JSON here (with --secret-stdin: the signing secret)",
    )
    where.add_argument(
        "--smtp", metavar="HOST:PORT", help="send email through this server (STARTTLS)"
    )
    add.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the webhook's shared signing secret from standard input",
    )
    add.add_argument("--from", dest="sender", metavar="ADDR", help="the sender address")
    add.add_argument("--to", metavar="ADDR[,ADDR]", help="recipient addresses")
    add.add_argument("--user", metavar="U", help="SMTP login user")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the SMTP password from standard input"
    )
    add.add_argument("--digest", action="store_true", help="also send a daily digest (09:00 UTC)")
    add.set_defaults(handler=cmd_alerts_add_channel)
    listing = _command(sub, "list", "alert channels and their status", "grafient alerts list")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead")
    listing.set_defaults(handler=cmd_alerts_list)
    test = _command(sub, "test", "send a test message and say what happened",
                    "grafient alerts test ops")  # fmt: skip
    test.add_argument("name", help="the channel's name")
    test.set_defaults(handler=cmd_alerts_test)
    remove = _command(
        sub, "remove", "delete a channel and its secrets", "grafient alerts remove ops"
    )
    remove.add_argument("name", help="the channel's name")
    remove.set_defaults(handler=cmd_alerts_remove)
