"""Anomalous days in a daily spend series, against a robust, weekday-aware baseline.

For each judged day the baseline is the 28 days before it (from the series' first day of spend
or the start of what is known, whichever is later): their median, or each weekday's median when
that explains the days clearly better (a weekly pattern), and a scale of 1.4826 x the median
absolute deviation from it (the standard deviation, were the noise normal, without letting the
spikes themselves widen it). A day is an anomaly when it is at least `min_score` scales away,
at least `min_impact_usd` away, at least `min_relative_change` away in proportion, and also
that far from the last three days' level (so a launch or an outage alerts on its first days,
not for weeks). A series
is judged once it has 14 days of history; its very first day of spend (after days of none) is
an anomaly only when it costs at least `first_day_min_impact_usd`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

ZERO = Decimal(0)
MAD_TO_SD = Decimal("1.4826")
PLACES = Decimal("0.0001")
# A weekly baseline must explain the days this much better than a flat one to be used.
WEEKLY_GAIN = Decimal("0.7")
FIRST_DAY_SCORE = Decimal(99)
RECENT_LEVEL_DAYS = 3


@dataclass(frozen=True)
class AnomalySettings:
    min_impact_usd: Decimal = Decimal(10)
    min_relative_change: Decimal = Decimal("0.3")
    min_score: Decimal = Decimal("5")
    history_days: int = 28
    min_history_days: int = 14
    first_day_min_impact_usd: Decimal = Decimal(100)


@dataclass(frozen=True)
class SeriesKey:
    integration_id: str
    dimension: str  # "total", "model" or "token_type"
    value: str  # the model or token type ("all" for the total)

    @property
    def name(self) -> str:
        if self.dimension == "total":
            return f"{self.integration_id} (all spend)"
        return f"{self.integration_id} {self.dimension.replace('_', ' ')} {self.value}"

    @property
    def key(self) -> str:
        return f"{self.integration_id}:{self.dimension}:{self.value}"


@dataclass(frozen=True)
class Anomaly:
    day: date
    series: SeriesKey
    actual_usd: Decimal
    expected_usd: Decimal
    expected_low_usd: Decimal
    expected_high_usd: Decimal
    impact_usd: Decimal  # actual - expected: positive for a spike, negative for a drop
    score: Decimal  # scales away from the baseline (signed)
    direction: str  # "spike" or "drop"
    first_seen: datetime | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """The stable key of its alert: series + day."""
        return f"anomaly:{self.series.key}:{self.day.isoformat()}"


def median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _high(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    return ordered[(17 * len(ordered)) // 20]


def detect(
    series: SeriesKey,
    daily: Mapping[date, Decimal],
    known_from: date,
    last_day: date,
    settings: AnomalySettings | None = None,
    judge_from: date | None = None,
) -> list[Anomaly]:
    """Anomalies of one series over the complete days [`judge_from`, `last_day`].

    `daily` holds the series' spend; a day missing from it between `known_from` (the first day
    whose data is known) and `last_day` is a day of no spend.
    """
    settings = settings or AnomalySettings()
    spending = sorted(day for day, usd in daily.items() if usd and known_from <= day <= last_day)
    if not spending:
        return []
    first = spending[0]
    found = []
    day = max(first, judge_from or known_from)
    while day <= last_day:
        anomaly = _judge(series, daily, known_from, first, day, settings)
        if anomaly is not None:
            found.append(anomaly)
        day += timedelta(days=1)
    return found


def _judge(
    series: SeriesKey,
    daily: Mapping[date, Decimal],
    known_from: date,
    first: date,
    day: date,
    settings: AnomalySettings,
) -> Anomaly | None:
    actual = Decimal(daily.get(day, ZERO))
    if day == first and first > known_from:
        if actual < settings.first_day_min_impact_usd:
            return None
        return Anomaly(day, series, actual, ZERO, ZERO, ZERO, actual, FIRST_DAY_SCORE, "spike")
    history_start = max(first, known_from, day - timedelta(days=settings.history_days))
    if (day - max(first, known_from)).days < settings.min_history_days:
        return None
    window = [history_start + timedelta(days=i) for i in range((day - history_start).days)]
    expected, scale, factors = _baseline(window, daily, day)
    if abs(actual - _recent_level(window, daily, day, factors)) < settings.min_score * scale:
        return None  # the spend moved days ago and stayed there: a new level, already told
    impact = actual - expected
    size = abs(impact)
    relative_ok = expected == 0 or size >= settings.min_relative_change * expected
    score = impact / scale
    if abs(score) < settings.min_score or size < settings.min_impact_usd or not relative_ok:
        return None
    band = settings.min_score * scale
    return Anomaly(
        day=day,
        series=series,
        actual_usd=actual,
        expected_usd=expected.quantize(PLACES),
        expected_low_usd=max(ZERO, expected - band).quantize(PLACES),
        expected_high_usd=(expected + band).quantize(PLACES),
        impact_usd=impact.quantize(PLACES),
        score=score.quantize(Decimal("0.01")),
        direction="spike" if impact > 0 else "drop",
    )


def _recent_level(
    window: list[date], daily: Mapping[date, Decimal], day: date, factors: dict[int, Decimal]
) -> Decimal:
    """The median of the last few days, de-seasonalized, as it would be on `day`.

    A launch (or an outage) moves spend to a new level: its first days are anomalies, but once
    the recent days sit at the new level it is the new normal, not news every day.
    """
    days = window[-RECENT_LEVEL_DAYS:]
    level = median(
        [Decimal(daily.get(d, ZERO)) / factors[d.weekday()] for d in days if factors[d.weekday()]]
        or [ZERO]
    )
    return level * factors[day.weekday()]


def _baseline(
    window: list[date], daily: Mapping[date, Decimal], day: date
) -> tuple[Decimal, Decimal, dict[int, Decimal]]:
    """(expected spend on `day`, scale, weekday factors): the flat median, or each weekday's
    median if that explains the days clearly better (factors: weekday median / flat median)."""
    values = [Decimal(daily.get(d, ZERO)) for d in window]
    flat = median(values)
    flat_mad = median([abs(v - flat) for v in values])
    by_weekday: dict[int, list[Decimal]] = {}
    for d, v in zip(window, values, strict=True):
        by_weekday.setdefault(d.weekday(), []).append(v)
    weekday_median = {w: median(vs) for w, vs in by_weekday.items() if len(vs) >= 2}
    expected, mad = flat, flat_mad
    factors = dict.fromkeys(range(7), Decimal(1))
    if len(weekday_median) == 7 and flat > 0:
        weekly = [abs(v - weekday_median[d.weekday()]) for d, v in zip(window, values, strict=True)]
        # Chosen on the 85th percentile of the deviations: robust to a few spikes, and unlike
        # the median it sees weekends (2 days in 7) that sit far from the weekdays.
        if _high(weekly) < WEEKLY_GAIN * _high([abs(v - flat) for v in values]):
            expected, mad = weekday_median[day.weekday()], median(weekly)
            factors = {w: m / flat for w, m in weekday_median.items()}
    # A floor for series that barely move: 5 % of the level, or a cent.
    scale = max(MAD_TO_SD * mad, expected * Decimal("0.05"), Decimal("0.01"))
    return expected, scale, factors
