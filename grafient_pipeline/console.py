"""Terminal presentation shared by the CLI and the demo: tables, money for people, notices.

Money is rounded here, for reading only; machine output (`--csv`, `--json`) never comes through
this module and keeps every decimal place.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from grafient_pipeline.report import MonthReport
    from grafient_pipeline.runs import SyncSummary

CENT = Decimal("0.01")
TENTH = Decimal("0.1")
BAR_WIDTH = 30


def money(value: Decimal | int) -> str:
    """An amount for people: 2 places, thousands separators (`1,234.57`, `0.00`)."""
    return _rounded(Decimal(value), CENT)


def signed_money(value: Decimal) -> str:
    text = money(value)
    return text if text.startswith("-") else f"+{text}"


def percent(value: Decimal) -> str:
    return f"{_rounded(value, TENTH)}%"


def _rounded(value: Decimal, step: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    rounded = value.quantize(step, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.00"
    return f"{rounded:,}"


def cell(value: object) -> str:
    """One table cell: decimals as money, None as blank, anything else as its text."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return money(value)
    return str(value)


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    out: TextIO | None = None,
    *,
    right: Sequence[str] = (),
) -> None:
    """Columns padded to fit, a rule under the header, the row count. Numbers (and the columns
    named in `right`) are right-aligned."""
    out = sys.stdout if out is None else out
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        is_number or name in right
        for name, is_number in zip(columns, _numeric_columns(rows, len(columns)), strict=True)
    ]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    print(line(columns), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)
    print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})", file=out)


def _numeric_columns(rows: Sequence[Sequence[object]], width: int) -> list[bool]:
    """A column is right-aligned when every value in it is a number (amounts line up)."""
    numeric = [bool(rows)] * width
    for row in rows:
        for i, value in enumerate(row):
            is_number = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
            if value is not None and not is_number:
                numeric[i] = False
    return numeric


def has_decimals(rows: Sequence[Sequence[object]]) -> bool:
    return any(isinstance(value, Decimal) for row in rows for value in row)


def describe_sync(summary: SyncSummary) -> str:
    """The one line after a sync, in cents (the exact figures are in the warehouse)."""
    delta = summary.usd_after - summary.usd_before
    return (
        f"{summary.piece}: {summary.rows_after:,} rows, {money(summary.usd_after)} USD "
        f"(was {summary.rows_before:,} rows, {money(summary.usd_before)} USD; "
        f"change {signed_money(delta)}) - run {summary.run_id} ({summary.where})"
    )


def print_report(report: MonthReport, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out
    scope = f"integration {report.integration_id}" if report.integration_id else "all integrations"
    partial = any(not d.is_final for d in report.days)
    print(
        f"Spend in {report.month} (UTC), {scope}: {money(report.total_usd)} USD"
        + ("  (the latest day is still partial)" if partial else ""),
        file=out,
    )
    sections: list[tuple[str, list[str], list[list[object]]]] = [
        (
            "Spend per integration",
            ["integration", "label", "days", "usd", "share"],
            [[i.integration_id, i.label, i.days, i.amount_usd, percent(i.share_pct)]
             for i in report.integrations],
        ),
        (
            "Top models",
            ["model", "usd", "share"],
            [[m.name, m.amount_usd, percent(m.share_pct)] for m in report.top_models],
        ),
        (
            "Token types",
            ["token_type", "usd", "share"],
            [[t.name, t.amount_usd, percent(t.share_pct)] for t in report.token_types],
        ),
    ]  # fmt: skip
    for title, columns, rows in sections:
        print(f"\n{title}", file=out)
        print_table(columns, rows, out, right=["share"])
    if report.other_models:
        print(
            f"and {report.other_models} more model(s): {money(report.other_models_usd)} USD",
            file=out,
        )
    print("\nDay by day", file=out)
    peak = max((d.amount_usd for d in report.days), default=Decimal(0))
    print_table(
        ["date", "usd", "", ""],
        [[d.cost_date.isoformat(), d.amount_usd, _bar(d.amount_usd, peak),
          "" if d.is_final else "partial"] for d in report.days],
        out,
    )  # fmt: skip
    if report.intelligence is not None:
        print_intelligence(report, out)


def print_intelligence(report: MonthReport, out: TextIO) -> None:
    """Budget status, forecast and anomalies (as of the intelligence assets' last run)."""
    found = report.intelligence
    if found is None:
        return
    print("\nBudgets", file=out)
    print_table(
        ["budget", "scope", "budget_usd", "spent", "used", "forecast", "of budget", "crossed"],
        [[b["budget"], b["scope"], b["budget_usd"], b["spend_usd"], percent(b["percent_used"]),
          b["forecast_usd"], percent(b["forecast_percent"]),
          ", ".join(f"{t}% on {d}" for t, d in zip(b["thresholds_crossed"], b["crossed_on"],
                                                   strict=True))]
         for b in found.budgets],
        out, right=["used", "of budget"],
    )  # fmt: skip
    print("\nMonth-end forecast (90% range)", file=out)
    print_table(
        ["integration", "so far", "forecast", "low", "high", "as of"],
        [[f["integration_id"] or "(all)", f["actual_usd"], f["forecast_usd"], f["low_usd"],
          f["high_usd"], str(f["as_of"])] for f in found.forecast],
        out,
    )  # fmt: skip
    print("\nAnomalies (largest first)", file=out)
    print_table(
        ["day", "series", "direction", "actual", "expected", "impact"],
        [[str(a["day"]), a["series"], a["direction"], a["actual_usd"], a["expected_usd"],
          a["impact_usd"]] for a in found.anomalies],
        out,
    )  # fmt: skip


def _bar(amount: Decimal, peak: Decimal) -> str:
    if peak <= 0 or amount <= 0:
        return ""
    return "#" * max(1, int(amount * BAR_WIDTH / peak))


def say_waiting(seconds: float) -> None:
    print(
        f"grafient: the warehouse is busy (a sync is writing it); waiting up to {seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
