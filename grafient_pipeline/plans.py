"""Plan tiers and the backfill windows they allow (pure functions, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

PLAN_WINDOW_DAYS: dict[str, int] = {"free": 30, "pro": 180, "ultimate": 180}
PLANS = tuple(PLAN_WINDOW_DAYS)


class PlanError(ValueError):
    """A plan name or a date range that the plan does not allow."""


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def parse_plan(name: str) -> str:
    plan = name.strip().lower()
    if plan not in PLAN_WINDOW_DAYS:
        raise PlanError(f"unknown plan {name!r}: choose one of {', '.join(PLANS)}")
    return plan


def window_days(plan: str) -> int:
    return PLAN_WINDOW_DAYS[parse_plan(plan)]


def earliest_allowed_date(plan: str, today: date) -> date:
    """The oldest date a plan may sync: its window is the last N days, today included."""
    return today - timedelta(days=window_days(plan) - 1)


def backfill_window(plan: str, today: date) -> DateRange:
    return DateRange(earliest_allowed_date(plan, today), today)


def upgrade_window(already_backfilled_days: int, plan: str, today: date) -> DateRange | None:
    """The days a larger window adds to one already backfilled (None when nothing is new)."""
    new_days = window_days(plan)
    if already_backfilled_days <= 0:
        return backfill_window(plan, today)
    if new_days <= already_backfilled_days:
        return None
    return DateRange(
        today - timedelta(days=new_days - 1), today - timedelta(days=already_backfilled_days)
    )


def check_range(plan: str, requested: DateRange, today: date) -> None:
    """Refuse a range that reaches before the plan window or into the future."""
    if requested.start > today:
        raise PlanError(
            f"the start date {requested.start.isoformat()} is in the future: the latest date to "
            f"sync is today, {today.isoformat()} (UTC)"
        )
    if requested.end < requested.start:
        raise PlanError(f"the range {requested} ends before it starts")
    earliest = earliest_allowed_date(plan, today)
    if requested.start < earliest:
        raise PlanError(
            f"{requested.start.isoformat()} is outside the {plan} plan's "
            f"{window_days(plan)}-day window: the earliest date allowed today is "
            f"{earliest.isoformat()} (upgrade the plan with "
            "`grafient integrations set-plan ID pro` to sync older days)"
        )
    if requested.end > today:
        raise PlanError(
            f"{requested.end.isoformat()} is in the future: the latest date to sync is "
            f"today, {today.isoformat()} (UTC)"
        )


def clip_to_plan(requested: DateRange, plan: str, today: date) -> DateRange | None:
    """The part of a range the plan allows today (None when none of it is)."""
    start = max(requested.start, earliest_allowed_date(plan, today))
    end = min(requested.end, today)
    return DateRange(start, end) if start <= end else None


# A run is judged by the plan window of the day it was requested on, if that day is recent: a
# run queued over midnight keeps its window, a re-execution weeks later does not.
PLAN_DATE_GRACE_DAYS = 7


def judging_date(requested_on: date | None, today: date) -> date:
    """The date whose plan window judges a run requested on ``requested_on``."""
    if requested_on is None or not today - timedelta(PLAN_DATE_GRACE_DAYS) <= requested_on <= today:
        return today
    return requested_on
