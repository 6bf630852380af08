"""Generated daily spend series with known answers, for the intelligence benchmarks.

Kinds: stable (level + 5 % noise), trending (+15..60 % or -10..35 % a month, compounding),
weekly (weekends at 30..60 % of weekdays), noisy (25 % noise), launch (a step to 2..4x on a
random day). Noise is multiplicative log-normal; amounts are Decimal cents. Fixed seeds: the
same figures every run.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from decimal import Decimal

KINDS = ("stable", "trending", "weekly", "noisy", "launch")
CENT = Decimal("0.01")


def series(kind: str, rng: random.Random, start: date, days: int) -> dict[date, Decimal]:
    return series_with_launch(kind, rng, start, days)[0]


def series_with_launch(
    kind: str, rng: random.Random, start: date, days: int
) -> tuple[dict[date, Decimal], date | None]:
    """The series and its launch day (None but for kind "launch")."""
    level = math.exp(rng.uniform(math.log(40), math.log(3000)))
    sigma = 0.25 if kind == "noisy" else 0.05
    monthly = 0.0
    if kind == "trending":
        monthly = rng.uniform(0.15, 0.6) if rng.random() < 0.5 else -rng.uniform(0.1, 0.35)
    weekend = rng.uniform(0.3, 0.6) if kind == "weekly" else 1.0
    launch_day = rng.randrange(days // 3, days) if kind == "launch" else days
    step = rng.uniform(2, 4)
    out = {}
    for i in range(days):
        day = start + timedelta(days=i)
        base = level * (1 + monthly) ** (i / 30)
        if day.weekday() >= 5:
            base *= weekend
        if i >= launch_day:
            base *= step
        value = base * math.exp(rng.gauss(0, sigma) - sigma * sigma / 2)
        out[day] = Decimal(str(value)).quantize(CENT)
    launched = start + timedelta(days=launch_day) if launch_day < days else None
    return out, launched
