"""Issue 16: forecast, anomaly detection and budget status on series with hand-computed answers."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from grafient_pipeline.intelligence.anomalies import AnomalySettings, SeriesKey, detect
from grafient_pipeline.intelligence.budgets import Budget, budget_statuses, crossings
from grafient_pipeline.intelligence.forecast import forecast_month
from grafient_pipeline.intelligence.messages import AlertMessage, anomaly_alerts, budget_alerts

TODAY = date(2026, 11, 11)  # a Wednesday; November 2026 starts on a Sunday
START = TODAY - timedelta(days=28)  # 2026-10-14
KEY = SeriesKey("acme", "model", "gpt-4o")
D = Decimal


def days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


# --- forecast ---------------------------------------------------------------------------------


def test_constant_spend_forecasts_the_month_exactly():
    daily = {day: D(100) for day in days(START, 28)}

    forecast = forecast_month(daily, TODAY)

    # 10 complete days (1000) + 20 remaining days at 100.
    assert forecast.actual_usd == D(1000)
    assert forecast.forecast_usd == D(3000)
    assert forecast.low_usd == forecast.high_usd == D(3000)  # no noise: no range
    assert (forecast.days_elapsed, forecast.days_in_month, forecast.baseline_days) == (10, 30, 28)


def test_weekday_effect_weekends_at_half():
    daily = {day: D(50) if day.weekday() >= 5 else D(100) for day in days(START, 28)}

    forecast = forecast_month(daily, TODAY)

    # Nov 1-10 hold 3 weekend days (1, 7, 8): 7 x 100 + 3 x 50 = 850.
    # Nov 11-30 hold 6 weekend days (14, 15, 21, 22, 28, 29): 14 x 100 + 6 x 50 = 1700.
    assert forecast.actual_usd == D(850)
    assert forecast.forecast_usd == D(2550)


def test_a_clear_trend_is_extrapolated():
    daily = {day: D(100 + 2 * i) for i, day in enumerate(days(START, 28))}

    forecast = forecast_month(daily, TODAY)

    # t = days since Oct 14. Nov 1-10 are t = 18..27: 1000 + 2 x 225 = 1450.
    # Nov 11-30 are t = 28..47: 2000 + 2 x 750 = 3500.
    assert forecast.actual_usd == D(1450)
    assert forecast.forecast_usd == D(4950)


def test_todays_partial_spend_counts_when_above_the_expected_day():
    daily = {day: D(100) for day in days(START, 28)}

    forecast = forecast_month(daily, TODAY, partial_today=D(250))

    assert forecast.actual_usd == D(1250)
    assert forecast.forecast_usd == D(3150)  # today at 250 instead of 100


def test_no_history_forecasts_the_actuals_only():
    forecast = forecast_month({}, TODAY, history_start=TODAY)
    assert forecast.forecast_usd == forecast.low_usd == forecast.high_usd == D(0)


def test_noise_gives_a_range_around_the_forecast():
    daily = {day: D(90) if i % 2 else D(110) for i, day in enumerate(days(START, 28))}
    forecast = forecast_month(daily, TODAY)
    assert forecast.low_usd < forecast.forecast_usd < forecast.high_usd
    assert forecast.low_usd >= forecast.actual_usd


# --- anomalies --------------------------------------------------------------------------------


def test_a_spike_on_alternating_spend():
    daily = {day: D(90) if i % 2 else D(110) for i, day in enumerate(days(START, 28))}
    daily[TODAY] = D(300)

    (anomaly,) = detect(KEY, daily, START, TODAY)

    # median 100, MAD 10, scale 1.4826 x 10 = 14.826; band 5 x 14.826 = 74.13
    assert anomaly.day == TODAY and anomaly.direction == "spike"
    assert anomaly.expected_usd == D(100)
    assert (anomaly.expected_low_usd, anomaly.expected_high_usd) == (D("25.87"), D("174.13"))
    assert anomaly.impact_usd == D(200)
    assert anomaly.score == D("13.49")
    assert anomaly.key == "anomaly:acme:model:gpt-4o:2026-11-11"


def test_a_drop_to_zero():
    daily = {day: D(100) for day in days(START, 28)}
    (anomaly,) = detect(KEY, daily, START, TODAY)  # TODAY is missing: no spend
    assert anomaly.direction == "drop"
    assert anomaly.impact_usd == D(-100)
    assert anomaly.score == D(-20)  # scale floor: 5 % of 100


def test_noise_control_min_impact_and_min_relative_change():
    small = {day: D(10) for day in days(START, 28)} | {TODAY: D(19)}
    assert detect(KEY, small, START, TODAY) == []  # +9 USD < 10 USD
    assert detect(KEY, small, START, TODAY, AnomalySettings(min_impact_usd=D(5)))

    big = {day: D(1000) for day in days(START, 28)} | {TODAY: D(1250)}
    assert detect(KEY, big, START, TODAY) == []  # +25 % < 30 %
    loose = AnomalySettings(min_relative_change=D("0.2"))
    assert [a.direction for a in detect(KEY, big, START, TODAY, loose)] == ["spike"]


def test_a_series_is_judged_after_14_days_of_history():
    daily = {day: D(100) for day in days(START, 28)}
    daily[START + timedelta(days=13)] = D(1000)
    daily[START + timedelta(days=14)] = D(1000)
    found = detect(KEY, daily, START, START + timedelta(days=20))
    assert [a.day for a in found] == [START + timedelta(days=14)]


def test_first_day_of_spend_alerts_only_when_large():
    quiet = {day: D(0) for day in days(START, 20)}
    modest = quiet | {TODAY: D(60)}
    assert detect(KEY, modest, START, TODAY) == []
    (anomaly,) = detect(KEY, quiet | {TODAY: D(150)}, START, TODAY)
    assert (anomaly.expected_usd, anomaly.impact_usd, anomaly.direction) == (D(0), D(150), "spike")


def test_weekends_are_expected_low_and_a_busy_saturday_is_a_spike():
    start = date(2026, 10, 5)  # a Monday
    daily = {day: D(20) if day.weekday() >= 5 else D(100) for day in days(start, 40)}
    saturday = date(2026, 11, 14)
    assert saturday.weekday() == 5

    assert detect(KEY, daily, start, saturday - timedelta(days=1)) == []  # no weekend "drops"
    daily[saturday] = D(100)
    (anomaly,) = detect(KEY, daily, start, saturday)
    assert anomaly.day == saturday
    assert (anomaly.expected_usd, anomaly.impact_usd) == (D(20), D(80))


def test_a_new_level_alerts_on_its_first_days_only():
    daily = {day: D(100) for day in days(START, 28)} | {
        TODAY + timedelta(days=i): D(300) for i in range(6)
    }
    found = detect(KEY, daily, START, TODAY + timedelta(days=5))
    assert [a.day for a in found] == [TODAY, TODAY + timedelta(days=1)]


def test_total_anomaly_alert_lists_its_models_and_token_types_stay_in_the_table():
    total = SeriesKey("acme", "total", "all")
    token = SeriesKey("acme", "token_type", "output")
    other = SeriesKey("beta", "model", "o3")
    series = {day: D(100) for day in days(START, 28)} | {TODAY: D(900)}
    found = [
        *detect(total, series, START, TODAY),
        *detect(KEY, series, START, TODAY),
        *detect(token, series, START, TODAY),
        *detect(other, series, START, TODAY),
    ]
    messages = anomaly_alerts(found)
    assert [m.key for m in messages] == [
        "anomaly:acme:total:all:2026-11-11",
        "anomaly:beta:model:o3:2026-11-11",
    ]
    assert "Driven by gpt-4o" in messages[0].text and "$900.00" in messages[0].text


# --- budgets ----------------------------------------------------------------------------------


def test_budget_status_thresholds_days_forecast_and_alert_keys():
    budget = Budget(7, "research", D(1000), (50, 80, 100), integration_id="acme")
    daily = {day: D(100) for day in days(date(2026, 11, 1), 8)}  # Nov 1-8

    (status,) = budget_statuses(budget, daily, date(2026, 11, 9))

    assert status.spend_usd == D(800)
    assert status.percent_used == D("80.00")
    assert status.crossed == ((50, date(2026, 11, 5)), (80, date(2026, 11, 8)))
    # 8 days of baseline at 100 (no weekday effect, no trend under 14 days): 800 + 22 x 100.
    assert status.forecast_usd == D(3000)
    assert status.forecast_percent == D("300.00")
    assert status.on_track_to_exceed
    messages = budget_alerts(status, "http://ui/assets/budget_status")
    assert [m.key for m in messages] == [
        "budget:7:2026-11:50",
        "budget:7:2026-11:80",
        "budget:7:2026-11:forecast",
    ]
    assert "crossing 80% on 2026-11-08" in messages[1].text
    assert "$800.00" in messages[1].text and "$1,000.00" in messages[1].text
    assert AlertMessage.from_json(messages[1].to_json()) == messages[1]


def test_past_months_are_history_without_forecast():
    budget = Budget(1, "all", D(100))
    daily = {date(2026, 10, 30): D(60), date(2026, 10, 31): D(60), date(2026, 11, 1): D(10)}
    october, november = budget_statuses(budget, daily, date(2026, 11, 2))
    assert october.month == "2026-10" and october.forecast is None
    assert october.crossed == ((50, date(2026, 10, 30)), (80, date(2026, 10, 31)),
                               (100, date(2026, 10, 31)))  # fmt: skip
    assert november.spend_usd == D(10) and november.crossed == ()


def test_a_restated_lower_spend_uncrosses_but_keeps_keys_stable():
    budget = Budget(1, "b", D(100), (80,))
    before = crossings(budget, {date(2026, 11, 1): D(85)}, date(2026, 11, 1), date(2026, 11, 1))
    after = crossings(budget, {date(2026, 11, 1): D(70)}, date(2026, 11, 1), date(2026, 11, 1))
    assert before == ((80, date(2026, 11, 1)),) and after == ()
