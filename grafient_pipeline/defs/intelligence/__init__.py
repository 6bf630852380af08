"""Spend intelligence in Dagster: budget status, forecast and anomalies as assets over the
rollups, a WARN check on new anomalies, alert delivery by a sensor, and a 09:00 UTC digest.

The logic is plain Python in grafient_pipeline/intelligence/; this package only wires it. The
three tables are fully derived each run (CREATE OR REPLACE TABLE in one transaction), so they
need no warehouse migration. Alerts are recorded in the registry's alert log after the table is
committed; the `deliver_alerts` sensor sends them.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource
from duckdb import DuckDBPyConnection

from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.intelligence.alert_log import deliver_pending, record
from grafient_pipeline.intelligence.budgets import BudgetStatus
from grafient_pipeline.intelligence.channels import RetryPolicy
from grafient_pipeline.intelligence.forecast import Forecast
from grafient_pipeline.intelligence.messages import (
    anomaly_alerts,
    asset_link,
    budget_alerts,
    digest_message,
    usd,
)
from grafient_pipeline.intelligence.store import list_budgets, list_channels
from grafient_pipeline.intelligence.tables import (
    compute_anomalies,
    compute_budget_statuses,
    compute_forecasts,
    current_month,
    digest_facts,
    load_spend,
    recent,
    write_anomalies,
    write_budget_statuses,
    write_forecasts,
)
from grafient_pipeline.sync import utc_today
from grafient_pipeline.warehouse import connect, write_transaction

GROUP = "intelligence"
KINDS = {"python", "duckdb"}
ROLLUPS = ["rollup_model_daily", "rollup_token_type_daily"]
SYNC_JOBS = ("openai_costs_job", "force_sync")
CHECK = "no_spend_anomalies"
TOP_ANOMALIES = 10
# A sensor tick must stay short: a few quick tries here, the next ticks back off further.
SENSOR_POLICY = RetryPolicy(attempts=3, backoff_s=1.0, max_wait_s=20.0, timeout_s=10.0)


@dg.asset(
    name="budget_status",
    group_name=GROUP,
    kinds=KINDS,
    deps=[*ROLLUPS, "fct_costs"],
    pool="duckdb",
    description="Per budget and month: spend to date, forecast at month end (with a range), "
    "percent used, the thresholds crossed and the day each was crossed. Records this month's "
    "threshold and 'on track to exceed' alerts (once per budget, month and threshold).",
)
def budget_status(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, registry: RegistryResource
) -> dg.MaterializeResult:
    store = registry.open()
    budgets = list_budgets(store)
    today = utc_today()

    def build(conn: DuckDBPyConnection) -> list[BudgetStatus]:
        statuses = compute_budget_statuses(conn, budgets, today)
        write_budget_statuses(conn, statuses)
        return statuses

    with connect(duckdb.database) as conn:
        statuses = write_transaction(conn, build)
    link = asset_link("budget_status")
    messages = [m for s in current_month(statuses, today) for m in budget_alerts(s, link)]
    new = record(store, messages)
    for key in new:
        context.log.info(f"alert recorded: {key}")
    this_month = current_month(statuses, today)
    return dg.MaterializeResult(
        metadata={
            "budgets": len(budgets),
            "this_month": dg.MetadataValue.md(
                "\n".join(
                    f"- {s.budget.name}: {usd(s.spend_usd)} of {usd(s.budget.monthly_usd)} "
                    f"({s.percent_used}%), forecast {usd(s.forecast_usd)}"
                    for s in this_month
                )
                or "no budgets (add one: grafient budgets add NAME --monthly USD)"
            ),
            "alerts_recorded": len(new),
        }
    )


@dg.asset(
    name="spend_forecast",
    group_name=GROUP,
    kinds=KINDS,
    deps=ROLLUPS,
    pool="duckdb",
    description="Month-end forecast per integration and per model (and for all integrations: "
    "integration_id NULL), with a 90 % low-high range: month-to-date actuals plus the remaining "
    "days from a trailing 28-day baseline with a day-of-week effect (and a trend when clear).",
)
def spend_forecast(duckdb: DuckDBResource) -> dg.MaterializeResult:

    def build(conn: DuckDBPyConnection) -> list[tuple[str | None, str | None, Forecast]]:
        rows = compute_forecasts(load_spend(conn, utc_today()))
        write_forecasts(conn, rows)
        return rows

    with connect(duckdb.database) as conn:
        rows = write_transaction(conn, build)
    total = next((f for i, m, f in rows if i is None and m is None), None)
    metadata: dict[str, object] = {"rows": len(rows)}
    if total is not None:
        metadata["month"] = total.month
        metadata["forecast_usd"] = dg.MetadataValue.text(
            f"{usd(total.forecast_usd)} ({usd(total.low_usd)} - {usd(total.high_usd)})"
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    name="spend_anomalies",
    group_name=GROUP,
    kinds=KINDS,
    deps=ROLLUPS,
    pool="duckdb",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset="spend_anomalies",
            description="Warns when spend moved away from its usual range on one of the last "
            "complete days (per integration, model and token type); the top anomalies are in "
            "the metadata. Never blocks anything.",
        )
    ],
    description="Days whose spend departs from a robust baseline (trailing 28 days, weekday "
    "aware, median/MAD), per integration in total, per model and per token type: actual, "
    "expected, usual range, impact, score, spike or drop, first seen. Records alerts for the "
    "last complete days.",
)
def spend_anomalies(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, registry: RegistryResource
) -> dg.MaterializeResult:
    today = utc_today()
    with connect(duckdb.database) as conn:
        found = write_transaction(
            conn, lambda c: write_anomalies(c, compute_anomalies(load_spend(c, today)))
        )
    fresh = recent(found, today)
    new = record(registry.open(), anomaly_alerts(fresh, asset_link("spend_anomalies")))
    for key in new:
        context.log.info(f"alert recorded: {key}")
    top = sorted(fresh, key=lambda a: abs(a.impact_usd), reverse=True)[:TOP_ANOMALIES]
    table = [
        {"day": a.day.isoformat(), "series": a.series.name, "direction": a.direction,
         "actual_usd": str(a.actual_usd), "expected_usd": str(a.expected_usd),
         "impact_usd": str(a.impact_usd), "score": str(a.score)}
        for a in top
    ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={"anomalies": len(found), "recent": len(fresh), "alerts_recorded": len(new)},
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK,
                passed=not fresh,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "recent_anomalies": len(fresh),
                    "top_anomalies": dg.MetadataValue.json(table),
                },
            )
        ],
    )


intelligence_assets = [budget_status, spend_forecast, spend_anomalies]

spend_intelligence_job = dg.define_asset_job(
    "spend_intelligence_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Budget status, forecast and anomalies again from the rollups (after each sync).",
)


@dg.run_status_sensor(
    name="intelligence_after_sync",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=spend_intelligence_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful sync run, recompute budget status, forecast and "
    "anomalies (which records their alerts).",
)
def intelligence_after_sync(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name not in SYNC_JOBS:
        return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is not a sync")
    return dg.RunRequest(run_key=f"intelligence-after:{run.run_id}")


@dg.sensor(
    name="deliver_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends the pending alerts of the alert log to every active channel: retries "
    "with backoff on 429/5xx/timeouts; a permanent failure (404, 401, refused login) marks the "
    "channel error and keeps its alerts pending until `grafient alerts test NAME` passes.",
)
def deliver_alerts(context: dg.SensorEvaluationContext, registry: RegistryResource):
    outcome = deliver_pending(registry.open(), policy=SENSOR_POLICY)
    for name, reason in outcome.broken_channels:
        context.log.warning(f"alert channel {name} is in error: {reason}")
    return dg.SkipReason(outcome.summary())


@dg.op(pool="duckdb", description="Record today's digest for every channel that wants one.")
def record_daily_digests(
    context: dg.OpExecutionContext, duckdb: DuckDBResource, registry: RegistryResource
) -> None:
    store = registry.open()
    wanted = [c for c in list_channels(store) if c.digest]
    if not wanted:
        context.log.info("no channel wants a digest (alerts add-channel ... --digest)")
        return
    with connect(duckdb.database) as conn:
        facts = digest_facts(conn, utc_today())
    if facts is None:
        context.log.info("no spend data yet: no digest")
        return
    for channel in wanted:
        message = digest_message(channel.name, facts, asset_link("budget_status"))
        record(store, [message], channel_ids=[channel.id])


@dg.job(name="alert_digest_job", description="The daily digest of spend, budgets and anomalies.")
def alert_digest_job() -> None:
    record_daily_digests()


daily_digest = dg.ScheduleDefinition(
    name="daily_digest_0900_utc",
    cron_schedule="0 9 * * *",
    execution_timezone="UTC",
    job=alert_digest_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="09:00 UTC, after the 06:00 sync: yesterday's spend, month to date, forecast "
    "against budgets, top movers and new anomalies, to each channel added with --digest.",
)


defs = dg.Definitions(
    assets=intelligence_assets,
    jobs=[spend_intelligence_job, alert_digest_job],
    schedules=[daily_digest],
    sensors=[intelligence_after_sync, deliver_alerts],
)
