"""Budget status per budget and month, and the alerts it calls for.

A threshold alerts once per budget and month: its key is budget + month + threshold, and the
alert log never records a key twice, so re-runs, backfills and restated days (even one that takes
spend back under the threshold) never repeat it. A forecast at or over 100 % while the spend is
still under it is its own alert, "on track to exceed", once per budget and month.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from grafient_pipeline.intelligence.forecast import Forecast, forecast_month, month_bounds

DEFAULT_THRESHOLDS = (50, 80, 100)
PCT_PLACES = Decimal("0.01")
ZERO = Decimal(0)
HUNDRED = Decimal(100)
FILTERS = ("integration_id", "provider", "project_id", "model")


@dataclass(frozen=True)
class Budget:
    id: int
    name: str
    monthly_usd: Decimal
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    integration_id: str | None = None
    provider: str | None = None
    project_id: str | None = None
    model: str | None = None

    @property
    def scope(self) -> str:
        """Its filters for people: `integration=acme, model=gpt-4o`, or `all spend`."""
        parts = [f"{name.removesuffix('_id')}={getattr(self, name)}" for name in FILTERS
                 if getattr(self, name)]  # fmt: skip
        return ", ".join(parts) or "all spend"


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    month_start: date
    as_of: date
    spend_usd: Decimal
    forecast: Forecast | None  # None for a month that is over
    crossed: tuple[tuple[int, date], ...]  # (threshold, day it was crossed)

    @property
    def month(self) -> str:
        return f"{self.month_start:%Y-%m}"

    @property
    def percent_used(self) -> Decimal:
        return _pct(self.spend_usd, self.budget.monthly_usd)

    @property
    def forecast_usd(self) -> Decimal:
        return self.forecast.forecast_usd if self.forecast else self.spend_usd

    @property
    def forecast_percent(self) -> Decimal:
        return _pct(self.forecast_usd, self.budget.monthly_usd)

    @property
    def on_track_to_exceed(self) -> bool:
        return self.forecast_percent >= HUNDRED and self.percent_used < HUNDRED

    def alert_key(self, threshold: int | str) -> str:
        return f"budget:{self.budget.id}:{self.month}:{threshold}"


def _pct(part: Decimal, whole: Decimal) -> Decimal:
    return (part * HUNDRED / whole).quantize(PCT_PLACES) if whole else ZERO


def crossings(
    budget: Budget, daily: Mapping[date, Decimal], month_start: date, last_day: date
) -> tuple[tuple[int, date], ...]:
    """The thresholds the month's running total reached by `last_day`, each with its day."""
    found: list[tuple[int, date]] = []
    total = ZERO
    day = month_start
    pending = sorted(budget.thresholds)
    while day <= last_day and pending:
        total += daily.get(day, ZERO)
        while pending and total * HUNDRED >= budget.monthly_usd * pending[0]:
            found.append((pending.pop(0), day))
        day += timedelta(days=1)
    return tuple(found)


def budget_statuses(
    budget: Budget,
    daily: Mapping[date, Decimal],
    today: date,
    *,
    history_start: date | None = None,
) -> list[BudgetStatus]:
    """One status per month from the first month with spend to this one (the month of `today`).

    `daily` holds every day's spend, today's partial spend included.
    """
    months: list[date] = []
    first = min((d for d, usd in daily.items() if usd), default=today)
    cursor = month_bounds(min(first, today))[0]
    while cursor <= today:
        months.append(cursor)
        cursor = month_bounds(cursor)[1] + timedelta(days=1)
    statuses = []
    for month_start in months:
        month_end = month_bounds(month_start)[1]
        last = min(month_end, today)
        spend = sum((usd for d, usd in daily.items() if month_start <= d <= last), ZERO)
        forecast = None
        if month_start <= today <= month_end:
            complete = {d: usd for d, usd in daily.items() if d < today}
            forecast = forecast_month(
                complete, today, history_start=history_start,
                partial_today=daily.get(today, ZERO),
            )  # fmt: skip
        statuses.append(
            BudgetStatus(
                budget=budget,
                month_start=month_start,
                as_of=today,
                spend_usd=spend,
                forecast=forecast,
                crossed=crossings(budget, daily, month_start, last),
            )
        )
    return statuses
