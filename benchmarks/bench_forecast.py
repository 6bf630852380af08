"""Backtest of the month-end forecast (grafient_pipeline/intelligence/forecast.py).

For each series kind, generated series (fixed seeds) with 60 days of history before a month;
the forecast made on day 10 and on day 20 (10 or 20 complete days known) is compared with the
month's actual total. Prints the mean absolute percentage error per kind; targets on stable and
trending series: <= 10 % at day 10, <= 5 % at day 20. Also the share of months whose actual
total fell inside the forecast's low-high range.

    .venv/bin/python benchmarks/bench_forecast.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._series import KINDS, series
from grafient_pipeline.intelligence.forecast import forecast_month, month_bounds

TARGETS = {10: Decimal(10), 20: Decimal(5)}
HISTORY_DAYS = 60


def backtest(kind: str, count: int, seed: int) -> dict[str, Decimal]:
    rng = random.Random(f"{seed}|{kind}")
    errors: dict[int, list[Decimal]] = {10: [], 20: []}
    inside = 0
    for _ in range(count):
        month_start = date(2025, rng.randrange(1, 13), 1)
        month_end = month_bounds(month_start)[1]
        start = month_start - timedelta(days=HISTORY_DAYS)
        data = series(kind, rng, start, (month_end - start).days + 1)
        actual = sum((v for d, v in data.items() if d >= month_start), Decimal(0))
        for made_on in errors:
            today = month_start + timedelta(days=made_on)
            known = {d: v for d, v in data.items() if d < today}
            forecast = forecast_month(known, today, history_start=start)
            errors[made_on].append(abs(forecast.forecast_usd - actual) * 100 / actual)
            if made_on == 10 and forecast.low_usd <= actual <= forecast.high_usd:
                inside += 1
    result = {f"mape_day{d}": sum(e, Decimal(0)) / len(e) for d, e in errors.items()}
    result["range_coverage_day10"] = Decimal(inside * 100) / count
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 series per kind (default 300)")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    count = 40 if args.quick else 300
    started = time.monotonic()
    print(f"month-end forecast backtest: {count} series per kind, seed {args.seed}")
    print(f"{'kind':<10} {'MAPE day 10':>12} {'MAPE day 20':>12} {'in range (day 10)':>18}")
    failed = []
    for kind in KINDS:
        figures = backtest(kind, count, args.seed)
        d10, d20 = figures["mape_day10"], figures["mape_day20"]
        print(f"{kind:<10} {d10:>11.2f}% {d20:>11.2f}% {figures['range_coverage_day10']:>17.0f}%")
        if kind in ("stable", "trending") and (d10 > TARGETS[10] or d20 > TARGETS[20]):
            failed.append(kind)
    print(f"targets (stable, trending): <= {TARGETS[10]}% at day 10, <= {TARGETS[20]}% at day 20:",
          "missed on " + ", ".join(failed) if failed else "met")  # fmt: skip
    print(f"({time.monotonic() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
