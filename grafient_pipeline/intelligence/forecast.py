"""Month-end forecast: month-to-date actuals plus the expected remaining days.

The remaining days come from a trailing baseline (up to 28 complete days) with a day-of-week
effect: each weekday's mean over the baseline, as a factor of the overall mean, scales a level
fitted on the de-seasonalized days. A trend (least squares slope) is kept only when it stands
clear of the noise (|slope| >= 2 standard errors) and there are 14 days or more. The range is a
90 % band from the baseline's residual spread: the remaining days' own noise plus the error of
the level, which every remaining day shares.

Money stays Decimal: the statistics run in Decimal too (28-digit context), and projections
are rounded to 1e-4 USD.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

BASELINE_DAYS = 28
MIN_TREND_DAYS = 14
MIN_WEEKDAY_DAYS = 14
Z_90 = Decimal("1.645")
PLACES = Decimal("0.0001")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Forecast:
    month_start: date
    today: date  # days before it are complete; today and after are forecast
    actual_usd: Decimal  # complete days of the month so far (+ today's partial spend, if any)
    forecast_usd: Decimal
    low_usd: Decimal
    high_usd: Decimal
    days_elapsed: int  # complete days of the month
    days_in_month: int
    baseline_days: int

    @property
    def month(self) -> str:
        return f"{self.month_start:%Y-%m}"


def month_bounds(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, following - timedelta(days=1)


def forecast_month(
    daily: Mapping[date, Decimal],
    today: date,
    *,
    history_start: date | None = None,
    partial_today: Decimal = ZERO,
) -> Forecast:
    """The forecast for the month of `today`, from complete days before it.

    `daily` holds complete days' spend (a missing day from `history_start` on is a day of no
    spend; before it nothing is known). `partial_today` is today's spend so far: today counts
    at least that much.
    """
    start, end = month_bounds(today)
    if history_start is None:
        history_start = min(daily, default=today)
    elapsed = (today - start).days
    actual = sum((daily.get(start + timedelta(days=i), ZERO) for i in range(elapsed)), ZERO)
    remaining = [today + timedelta(days=i) for i in range((end - today).days + 1)]
    window_start = max(history_start, today - timedelta(days=BASELINE_DAYS))
    window = [window_start + timedelta(days=i) for i in range((today - window_start).days)]
    spent = actual + partial_today
    if not window:
        return Forecast(start, today, spent, spent, spent, spent, elapsed, end.day, 0)
    model = _Baseline.fit([(day, Decimal(daily.get(day, ZERO))) for day in window])
    expected = [model.expected(day) for day in remaining]
    if expected:
        expected[0] = max(expected[0], partial_today)
    projected = sum(expected, ZERO).quantize(PLACES)
    spread = (Z_90 * model.sum_sd(remaining)).quantize(PLACES)
    forecast = actual + projected
    return Forecast(
        month_start=start,
        today=today,
        actual_usd=spent,
        forecast_usd=forecast,
        low_usd=max(spent, forecast - spread),
        high_usd=forecast + spread,
        days_elapsed=elapsed,
        days_in_month=end.day,
        baseline_days=len(window),
    )


@dataclass(frozen=True)
class _Baseline:
    origin: date
    intercept: Decimal
    slope: Decimal
    weekday_factor: tuple[Decimal, ...]
    residual_sd: Decimal
    days_used: int = 1
    x_mean: Decimal = ZERO
    slope_se: Decimal = ZERO  # zero when no trend is kept

    @classmethod
    def fit(cls, points: list[tuple[date, Decimal]]) -> _Baseline:
        """A line through the days, then weekday factors as each weekday's mean ratio to that
        line (so a trend does not leak into them), then the line again on the days divided by
        their factors."""
        origin = points[0][0]
        flat = cls._line(origin, points, (Decimal(1),) * 7)
        factors = _weekday_factors(points, flat.level)
        return cls._line(origin, points, factors)

    @classmethod
    def _line(
        cls, origin: date, points: list[tuple[date, Decimal]], factors: tuple[Decimal, ...]
    ) -> _Baseline:
        # Weekdays that never spend (factor 0) say nothing about the level.
        used = [(day, value) for day, value in points if factors[day.weekday()]]
        if not used:
            return cls(origin, ZERO, ZERO, factors, ZERO)
        xs = [Decimal((day - origin).days) for day, _ in used]
        zs = [value / factors[day.weekday()] for day, value in used]
        n = Decimal(len(used))
        x_mean, z_mean = sum(xs, ZERO) / n, sum(zs, ZERO) / n
        sxx = sum(((x - x_mean) ** 2 for x in xs), ZERO)
        slope = (
            sum(((x - x_mean) * (z - z_mean) for x, z in zip(xs, zs, strict=True)), ZERO) / sxx
            if sxx
            else ZERO
        )
        fitted = [z_mean + slope * (x - x_mean) for x in xs]
        sse = sum(((z - f) ** 2 for z, f in zip(zs, fitted, strict=True)), ZERO)
        sd = (sse / max(len(used) - 2, 1)).sqrt()
        if len(used) < MIN_TREND_DAYS or not sxx or abs(slope) < 2 * sd / sxx.sqrt():
            slope = ZERO
            sse = sum(((z - z_mean) ** 2 for z in zs), ZERO)
            sd = (sse / max(len(used) - 1, 1)).sqrt()
        slope_se = sd / sxx.sqrt() if slope else ZERO
        return cls(origin, z_mean - slope * x_mean, slope, factors, sd, len(used), x_mean, slope_se)

    def level(self, day: date) -> Decimal:
        return self.intercept + self.slope * Decimal((day - self.origin).days)

    def sum_sd(self, days: list[date]) -> Decimal:
        """The standard error of the sum over `days`: each day's own noise, plus the level's
        error (counted twice: the weekday factors are estimated from the same days), plus the
        slope's error growing with the distance from the baseline's middle."""
        k = Decimal(len(days))
        noise = k * self.residual_sd**2
        level = 2 * (k * self.residual_sd) ** 2 / Decimal(self.days_used)
        reach = sum((Decimal((d - self.origin).days) - self.x_mean for d in days), ZERO)
        return (noise + level + (self.slope_se * reach) ** 2).sqrt()

    def expected(self, day: date) -> Decimal:
        return max(ZERO, self.level(day) * self.weekday_factor[day.weekday()])


def _weekday_factors(
    points: list[tuple[date, Decimal]], line: Callable[[date], Decimal]
) -> tuple[Decimal, ...]:
    """Each weekday's mean ratio to `line`, over the mean ratio (all 1 under two weeks)."""
    ratios = [(day, value / line(day)) for day, value in points if line(day) > 0]
    if len(ratios) < MIN_WEEKDAY_DAYS:
        return (Decimal(1),) * 7
    mean = sum((r for _, r in ratios), ZERO) / len(ratios)
    if mean <= 0:
        return (Decimal(1),) * 7
    sums, counts = [ZERO] * 7, [0] * 7
    for day, ratio in ratios:
        sums[day.weekday()] += ratio
        counts[day.weekday()] += 1
    return tuple((sums[w] / counts[w] / mean) if counts[w] else Decimal(1) for w in range(7))
