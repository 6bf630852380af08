"""Precision and recall of the anomaly detector (grafient_pipeline/intelligence/anomalies.py).

Generated series (fixed seeds; stable, trending, weekly, noisy, launch) of 150 days get
labelled events on known days: spikes of 1.5x, 2x, 3x, 5x or 10x and drops to 0 %, 20 % or 40 %
of the day's spend. The detector, with its default settings, judges days 30..149. A detection
on a labelled day in the right direction is a true positive; on any other day a false alert
(the first days after a launch are counted apart: a new level is news once). Targets: recall
>= 0.9 on spikes >= 2x with >= 50 USD impact; <= 1 false alert per series per 90 days.

    .venv/bin/python benchmarks/bench_anomalies.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._series import KINDS, series_with_launch
from grafient_pipeline.intelligence.anomalies import SeriesKey, detect

DAYS = 150
JUDGED_FROM = 30
SPIKES = (Decimal("1.5"), Decimal(2), Decimal(3), Decimal(5), Decimal(10))
DROPS = (Decimal(0), Decimal("0.2"), Decimal("0.4"))
LAUNCH_DAYS = 7  # alerts this soon after a launch are about the launch, not false


def inject(data: dict[date, Decimal], rng: random.Random, start: date):
    """Three events on days at least 10 apart: two spikes and a drop. Returns the labels."""
    labels = {}
    days = sorted(rng.sample(range(JUDGED_FROM + 5, DAYS, 10), 3))
    for n, offset in enumerate(days):
        day = start + timedelta(days=offset + rng.randrange(0, 5))
        before = data[day]
        factor = rng.choice(SPIKES) if n < 2 else rng.choice(DROPS)
        data[day] = (before * factor).quantize(Decimal("0.01"))
        labels[day] = ("spike" if factor > 1 else "drop", factor, abs(data[day] - before))
    return labels


def run(count: int, seed: int) -> int:
    start = date(2025, 1, 1)
    totals: Counter = Counter()
    print(f"{'kind':<9} {'recall>=2x&>=50$':>16} {'recall 1.5x':>11} {'recall drops':>12} "
          f"{'precision':>9} {'false/90d':>9} {'launch alerts':>13}")  # fmt: skip
    for kind in KINDS:
        rng = random.Random(f"{seed}|{kind}")
        c: Counter = Counter()
        for i in range(count):
            data, launch = series_with_launch(kind, rng, start, DAYS)
            labels = inject(data, rng, start)
            key = SeriesKey(f"bench-{i}", "model", kind)
            last = start + timedelta(days=DAYS - 1)
            found = detect(key, data, start, last, judge_from=start + timedelta(days=JUDGED_FROM))
            hits = {a.day: a.direction for a in found}
            for day, (direction, factor, impact) in labels.items():
                bucket = (
                    "drop" if direction == "drop"
                    else "big" if factor >= 2 and impact >= 50
                    else "small" if factor == Decimal("1.5") else "other"
                )  # fmt: skip
                c[f"{bucket}_n"] += 1
                c[f"{bucket}_hit"] += hits.get(day) == direction
            for day in hits.keys() - labels.keys():
                if launch is not None and launch <= day < launch + timedelta(days=LAUNCH_DAYS):
                    c["launch_alerts"] += 1
                else:
                    c["false"] += 1
            c["tp"] += sum(hits.get(d) == lab[0] for d, lab in labels.items())
        totals.update(c)
        print(_line(kind, c, count))
    print(_line("all", totals, count * len(KINDS)))
    big = totals["big_hit"] / max(totals["big_n"], 1)
    per_90 = totals["false"] / (count * len(KINDS) * (DAYS - JUDGED_FROM) / 90)
    ok = big >= 0.9 and per_90 <= 1
    print(
        f"targets: recall >= 0.90 on spikes >= 2x with >= 50 USD ({big:.3f}), "
        f"<= 1 false alert per series per 90 days ({per_90:.3f}): {'met' if ok else 'missed'}"
    )
    return 0 if ok else 1


def _line(kind: str, c: Counter, count: int) -> str:
    def ratio(name: str) -> str:
        return f"{c[name + '_hit'] / c[name + '_n']:.3f}" if c[name + "_n"] else "-"

    precision = c["tp"] / max(c["tp"] + c["false"], 1)
    per_90 = c["false"] / (count * (DAYS - JUDGED_FROM) / 90)
    return (f"{kind:<9} {ratio('big'):>16} {ratio('small'):>11} {ratio('drop'):>12} "
            f"{precision:>9.3f} {per_90:>9.3f} {c['launch_alerts']:>13}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 series per kind (default 200)")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    count = 40 if args.quick else 200
    started = time.monotonic()
    print(f"anomaly detection: {count} series per kind x {DAYS} days, seed {args.seed}")
    code = run(count, args.seed)
    print(f"({time.monotonic() - started:.1f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
