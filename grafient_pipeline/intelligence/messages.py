"""Alert messages: short, human, useful: what happened, how much, against what, and a link.

Each message carries its stable key (budget + month + threshold, anomaly series + day, digest
channel + day): receivers can de-duplicate on it, and the alert log never records it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from grafient_pipeline.intelligence.anomalies import Anomaly
from grafient_pipeline.intelligence.budgets import BudgetStatus

CENT = Decimal("0.01")
MAX_DRIVERS = 3


@dataclass(frozen=True)
class AlertMessage:
    key: str
    kind: str  # budget_threshold, budget_forecast, anomaly, digest, test
    title: str
    text: str
    link: str | None = None
    data: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlertMessage:
        return cls(**json.loads(text))

    def plain_text(self) -> str:
        """The message as a chat line or an email body, its key at the end."""
        lines = [self.title, self.text]
        if self.link:
            lines.append(self.link)
        lines.append(f"(alert key: {self.key})")
        return "\n".join(line for line in lines if line)


def usd(value: Decimal) -> str:
    rounded = Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
    return f"${abs(rounded):,}" if rounded >= 0 else f"-${abs(rounded):,}"


def _pct(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def budget_alerts(status: BudgetStatus, link: str | None = None) -> list[AlertMessage]:
    """The alerts of a month's status: each threshold crossed, and "on track to exceed"."""
    budget = status.budget
    against = f"budget {budget.name!r} ({budget.scope}): {usd(budget.monthly_usd)} a month"
    common = {
        "budget": budget.name,
        "month": status.month,
        "budget_usd": str(budget.monthly_usd),
        "spend_usd": str(status.spend_usd),
        "forecast_usd": str(status.forecast_usd),
    }
    messages = [
        AlertMessage(
            key=status.alert_key(threshold),
            kind="budget_threshold",
            title=f"Budget {budget.name!r} passed {threshold}% for {status.month}",
            text=(
                f"Spend reached {usd(status.spend_usd)} ({_pct(status.percent_used)}) of "
                f"{against}, crossing {threshold}% on {day.isoformat()}. Forecast for the month: "
                f"{usd(status.forecast_usd)} ({_pct(status.forecast_percent)})."
            ),
            link=link,
            data={**common, "threshold": str(threshold), "crossed_on": day.isoformat()},
        )
        for threshold, day in status.crossed
    ]
    if status.on_track_to_exceed and status.forecast is not None:
        forecast = status.forecast
        messages.append(
            AlertMessage(
                key=status.alert_key("forecast"),
                kind="budget_forecast",
                title=f"Budget {budget.name!r} is on track to exceed {status.month}",
                text=(
                    f"Forecast {usd(forecast.forecast_usd)} ({_pct(status.forecast_percent)}, "
                    f"range {usd(forecast.low_usd)}-{usd(forecast.high_usd)}) against {against}; "
                    f"spent so far {usd(status.spend_usd)} ({_pct(status.percent_used)})."
                ),
                link=link,
                data={**common, "threshold": "forecast"},
            )
        )
    return messages


def anomaly_alert(
    anomaly: Anomaly, drivers: Iterable[Anomaly] = (), link: str | None = None
) -> AlertMessage:
    """One anomaly; `drivers` are the same day's model anomalies behind a total's."""
    verb = "jumped" if anomaly.direction == "spike" else "fell"
    ratio = (
        f" ({(anomaly.actual_usd / anomaly.expected_usd).quantize(Decimal('0.1'))}x)"
        if anomaly.expected_usd
        else " (new spend)"
    )
    text = (
        f"{anomaly.series.name} {verb} to {usd(anomaly.actual_usd)} on "
        f"{anomaly.day.isoformat()}{ratio}; expected about {usd(anomaly.expected_usd)} "
        f"(usual range {usd(anomaly.expected_low_usd)}-{usd(anomaly.expected_high_usd)}), "
        f"impact {usd(anomaly.impact_usd)}."
    )
    top = sorted(drivers, key=lambda a: abs(a.impact_usd), reverse=True)[:MAX_DRIVERS]
    if top:
        text += (
            " Driven by " + ", ".join(f"{d.series.value} {usd(d.impact_usd)}" for d in top) + "."
        )
    return AlertMessage(
        key=anomaly.key,
        kind="anomaly",
        title=f"Spend {anomaly.direction}: {anomaly.series.name} on {anomaly.day.isoformat()}",
        text=text,
        link=link,
        data={
            "series": anomaly.series.key,
            "day": anomaly.day.isoformat(),
            "actual_usd": str(anomaly.actual_usd),
            "expected_usd": str(anomaly.expected_usd),
            "impact_usd": str(anomaly.impact_usd),
            "direction": anomaly.direction,
        },
    )


def anomaly_alerts(anomalies: Iterable[Anomaly], link: str | None = None) -> list[AlertMessage]:
    """An alert per anomalous total, with its models as drivers; a model anomaly whose
    integration's total was not anomalous that day gets its own. Token types: table only."""
    found = list(anomalies)
    totals = {(a.series.integration_id, a.day): a for a in found if a.series.dimension == "total"}
    messages = []
    for (integration_id, day), total in sorted(totals.items()):
        drivers = [
            a for a in found
            if a.series.dimension == "model" and a.series.integration_id == integration_id
            and a.day == day
        ]  # fmt: skip
        messages.append(anomaly_alert(total, drivers, link))
    for anomaly in found:
        alone = (anomaly.series.integration_id, anomaly.day) not in totals
        if anomaly.series.dimension == "model" and alone:
            messages.append(anomaly_alert(anomaly, (), link))
    return messages


@dataclass(frozen=True)
class DigestFacts:
    day: date  # the day the digest describes (yesterday)
    yesterday_usd: Decimal
    month_to_date_usd: Decimal
    forecast_usd: Decimal | None
    budgets: list[tuple[str, Decimal, Decimal, Decimal]]  # name, budget, spend, forecast
    movers: list[tuple[str, Decimal]]  # model, change against the day before
    new_anomalies: list[str]  # one line each


def digest_message(channel_name: str, facts: DigestFacts, link: str | None) -> AlertMessage:
    lines = [
        f"Yesterday ({facts.day.isoformat()}): {usd(facts.yesterday_usd)}. "
        f"Month to date: {usd(facts.month_to_date_usd)}"
        + (f", forecast {usd(facts.forecast_usd)}." if facts.forecast_usd is not None else ".")
    ]
    for name, budget, spend, forecast in facts.budgets:
        lines.append(f"Budget {name!r}: {usd(spend)} of {usd(budget)}, forecast {usd(forecast)}.")
    if facts.movers:
        lines.append(
            "Top movers: " + ", ".join(f"{model} {usd(change)}" for model, change in facts.movers)
        )
    lines.extend(f"New anomaly: {line}" for line in facts.new_anomalies)
    return AlertMessage(
        key=f"digest:{channel_name}:{facts.day.isoformat()}",
        kind="digest",
        title=f"Grafient daily spend digest for {facts.day.isoformat()}",
        text="\n".join(lines),
        link=link,
        data={"day": facts.day.isoformat(), "month_to_date_usd": str(facts.month_to_date_usd)},
    )


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def asset_link(asset: str) -> str:
    """The asset's page in the Dagster UI (GRAFIENT_DAGSTER_URL, default the local one)."""
    import os

    base = os.environ.get("GRAFIENT_DAGSTER_URL", "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/assets/{asset}"
