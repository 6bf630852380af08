"""Charts as SVG made on the server: no JavaScript, no chart library, nothing to download.

A stacked bar chart draws each series as ONE path (a rectangle per day), so 180 days x 9 series
stay small; each day has a transparent column whose <title> is the hover text (exact cents from
the Decimals). Colours are CSS classes (c0..c9) shared with the legend, so the Content Security
Policy needs no inline style. Geometry uses floats (pixels); every number shown is a Decimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from html import escape

from grafient_pipeline.console import money
from grafient_pipeline.dashboard.figures import DailyChart

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 30
PALETTE_SIZE = 10


@dataclass(frozen=True)
class LegendItem:
    name: str
    css: str
    total: Decimal


def usd(value: Decimal) -> str:
    return f"${money(value)}"


def nice_step(top: float, ticks: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^k) so that `ticks` steps cover `top`."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power


def axis_label(value: float) -> str:
    if value >= 1_000_000:
        return f"${value / 1_000_000:g}M"
    if value >= 1_000:
        return f"${value / 1_000:g}k"
    return f"${value:g}"


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def legend(chart: DailyChart) -> list[LegendItem]:
    return [LegendItem(s.name, f"c{n % PALETTE_SIZE}", s.total) for n, s in enumerate(chart.series)]


def stacked_bars(chart: DailyChart, title: str) -> str:
    """The chart as an inline <svg> element (trusted markup: every text in it is escaped)."""
    days, totals = chart.days, chart.totals
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = nice_step(float(max(totals, default=Decimal(0))))
    top = step * max(1, math.ceil(float(max(totals, default=Decimal(0))) / step))
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.78)

    def y(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: {len(days)} days, total {escape(usd(chart.total))}" '
        'preserveAspectRatio="xMidYMid meet">'
    ]
    parts.append(_y_axis(step, top, y))
    parts.append(_x_axis(days, slot))
    base = [0.0] * len(days)  # the top of each day's stack so far
    for n, series in enumerate(chart.series):
        d = []
        for i, amount in enumerate(series.amounts):
            if amount > 0:
                low, high = base[i], base[i] + float(amount)
                x = LEFT + i * slot + (slot - bar) / 2
                d.append(f"M{x:.1f} {y(low):.1f}V{y(high):.1f}h{bar:.1f}V{y(low):.1f}Z")
                base[i] = high
        if d:
            parts.append(f'<path class="c{n % PALETTE_SIZE}" d="{"".join(d)}"/>')
    parts.append(_hover_columns(chart, slot, plot_h))
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(step: float, top: float, y) -> str:
    lines = []
    value = 0.0
    while value <= top + step / 2:
        py = y(value)
        lines.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>'
            f'<text class="tick" x="{LEFT - 8}" y="{py + 4:.1f}" text-anchor="end">'
            f"{escape(axis_label(value))}</text>"
        )
        value += step
    return "".join(lines)


def _x_axis(days: list[date], slot: float) -> str:
    every = max(1, math.ceil(len(days) / 8))
    labels = []
    for i, day in enumerate(days):
        if (len(days) - 1 - i) % every == 0:  # always label the last day (today)
            x = LEFT + i * slot + slot / 2
            labels.append(
                f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
                f"{escape(_day_label(day))}</text>"
            )
    return "".join(labels)


def _hover_columns(chart: DailyChart, slot: float, plot_h: float) -> str:
    columns = []
    totals = chart.totals
    for i, day in enumerate(chart.days):
        lines = [f"{day.isoformat()}: {usd(totals[i])}"]
        lines += [f"{s.name}: {usd(s.amounts[i])}" for s in chart.series if s.amounts[i] > 0]
        x = LEFT + i * slot
        columns.append(
            f'<rect class="hit" x="{x:.1f}" y="{TOP}" width="{slot:.1f}" height="{plot_h:.1f}">'
            f"<title>{escape(chr(10).join(lines))}</title></rect>"
        )
    return f'<g class="hits">{"".join(columns)}</g>'
