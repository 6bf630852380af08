"""Issue 14 item 7: `grafient report`, a month of spend for people, computed by report.py on a
DuckDB file built with the project's own SQL models (schema and rollups), exact to the last
decimal; rounded only when printed for people, never in `--json`."""

from __future__ import annotations

import io
import json
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline import cli
from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.report import ReportError, month_report, parse_month
from grafient_pipeline.sync import utc_today
from grafient_pipeline.warehouse import run_models
from tests.conftest import ADMIN_KEY, ORG_ID, run_range

NOVEMBER = DateRange(date(2026, 11, 1), date(2026, 11, 30))
FACTS = [
    # integration, date, model, token type, amount (DECIMAL(38,16) text), final
    ("acme", "2026-10-31", "gpt-4o", "input", "1000.0000000000000001", True),  # other month
    ("acme", "2026-11-01", "gpt-4o", "input", "118.2297531511144262", True),
    ("acme", "2026-11-01", "gpt-4o", "output", "0.0000000000000001", True),
    ("acme", "2026-11-02", "gpt-4o-mini", "cached_input", "0.5", True),
    ("acme", "2026-11-30", "o3", "output", "1234.005", False),
    ("beta", "2026-11-02", "gpt-4o", "input", "0E-16", True),
    ("beta", "2026-11-15", None, "other", "7.25", True),  # a non-token charge: its line item
    ("beta", "2026-12-01", "gpt-4o", "input", "99", True),  # other month
]


def build_warehouse(path: Path, facts=FACTS) -> None:
    with duckdb.connect(str(path)) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO dim_integrations VALUES "
            "('acme', 'Acme Prod', 'openai', 'pro', 'org-a', 'active', NULL), "
            "('beta', 'Beta', 'openai', 'free', 'org-b', 'active', NULL)"
        )
        for iid, day, model, token_type, amount, final in facts:
            conn.execute(
                "INSERT INTO fct_costs (integration_id, provider, cost_date, line_item, model, "
                "token_type, service_tier, amount_usd, currency, is_final) "
                "VALUES (?, 'openai', ?, ?, ?, ?, 'default', ?::DECIMAL(38, 16), 'usd', ?)",
                [iid, day, f"{model or 'storage'}, {token_type}", model, token_type, amount,
                 final],
            )  # fmt: skip
        for iid in {fact[0] for fact in facts}:
            params = {"integration_id": iid, "start_date": "2026-01-01", "end_date": "2027-01-01"}
            run_models(conn, ["rollup_model_daily", "rollup_token_type_daily"], params)


@pytest.fixture
def conn(tmp_path: Path):
    path = tmp_path / "warehouse.duckdb"
    build_warehouse(path)
    with duckdb.connect(str(path), read_only=True) as connection:
        yield connection


def test_month_report_is_exact_and_stays_inside_the_month(conn):
    report = month_report(conn, NOVEMBER)

    expected_total = Decimal("118.2297531511144263") + Decimal("0.5") + Decimal("1234.005")
    expected_total += Decimal("7.25")
    assert report.total_usd == expected_total
    assert [(i.integration_id, i.label, i.days, i.amount_usd) for i in report.integrations] == [
        ("acme", "Acme Prod", 3, Decimal("1352.7347531511144263")),
        ("beta", "Beta", 2, Decimal("7.25")),
    ]
    assert sum(i.share_pct for i in report.integrations) == pytest.approx(100, abs=0.001)
    assert [(m.name, m.amount_usd) for m in report.top_models] == [
        ("o3", Decimal("1234.005")),
        ("gpt-4o", Decimal("118.2297531511144263")),
        ("storage, other", Decimal("7.25")),
        ("gpt-4o-mini", Decimal("0.5")),
    ]
    assert {t.name: t.amount_usd for t in report.token_types} == {
        "output": Decimal("1234.0050000000000001"),
        "input": Decimal("118.2297531511144262"),
        "other": Decimal("7.25"),
        "cached_input": Decimal("0.5"),
    }
    assert [(d.cost_date.isoformat(), d.is_final) for d in report.days] == [
        ("2026-11-01", True), ("2026-11-02", True), ("2026-11-15", True), ("2026-11-30", False),
    ]  # fmt: skip
    assert sum(d.amount_usd for d in report.days) == report.total_usd


def test_one_integration_and_the_top_n_cut(conn):
    report = month_report(conn, NOVEMBER, "acme", top=2)
    assert report.total_usd == Decimal("1352.7347531511144263")
    assert [i.integration_id for i in report.integrations] == ["acme"]
    assert [m.name for m in report.top_models] == ["o3", "gpt-4o"]
    assert (report.other_models, report.other_models_usd) == (1, Decimal("0.5"))
    assert month_report(conn, NOVEMBER, "nobody").is_empty


def test_json_keeps_every_decimal_place(conn):
    data = month_report(conn, NOVEMBER).as_json()
    json.dumps(data)  # plain JSON types only
    assert data["month"] == "2026-11"
    assert data["total_usd"] == "1359.9847531511144263"
    assert data["days"][0] == {
        "cost_date": "2026-11-01",
        "amount_usd": "118.2297531511144263",
        "is_final": True,
    }


def test_parse_month():
    today = date(2026, 2, 17)
    assert parse_month(None, today) == DateRange(date(2026, 2, 1), date(2026, 2, 28))
    assert parse_month("2028-02", today) == DateRange(date(2028, 2, 1), date(2028, 2, 29))
    assert parse_month("2026-12", today).end == date(2026, 12, 31)
    for bad in ("2026-13", "2026-00", "26-11", "2026-11-01", "november", "0000-01"):
        with pytest.raises(ReportError, match="use YYYY-MM"):
            parse_month(bad, today)


def call(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GRAFIENT_HOME", str(home))
    monkeypatch.delenv("GRAFIENT_WAREHOUSE", raising=False)
    return home


def test_report_prints_money_for_people_and_json_in_full(home, capsys, monkeypatch):
    home.mkdir()
    build_warehouse(home / "warehouse.duckdb")

    code, out, err = call(capsys, monkeypatch, "report", "--month", "2026-11")

    assert code == 0, err
    assert "Spend in 2026-11 (UTC), all integrations: 1,359.98 USD" in out
    for section in ("Spend per integration", "Top models", "Token types", "Day by day"):
        assert section in out
    assert "1,234.01" in out and "118.23" in out and "Acme Prod" in out and "partial" in out
    assert "118.2297" not in out and "E-16" not in out
    code, out, _ = call(capsys, monkeypatch, "report", "--month", "2026-11", "--json")
    assert code == 0
    assert json.loads(out)["total_usd"] == "1359.9847531511144263"
    args = ("report", "--month", "2026-10", "--integration", "beta")
    code, out, _ = call(capsys, monkeypatch, *args)
    assert code == 0 and "no spend recorded in 2026-10" in out


def test_report_never_creates_a_home_or_a_warehouse(home, capsys, monkeypatch):
    code, out, err = call(capsys, monkeypatch, "report")
    assert code == 0, err
    assert out.startswith("no data yet") and "grafient integrations add" in out
    assert not home.exists()
    code, out, _ = call(capsys, monkeypatch, "report", "--json")
    assert code == 0 and json.loads(out)["days"] == []
    assert not home.exists()


def test_report_refuses_a_bad_month_or_id_in_one_line(home, capsys, monkeypatch):
    for args in (("--month", "2026-13"), ("--integration", "acme\n")):
        code, out, err = call(capsys, monkeypatch, "report", *args)
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("grafient: error:")


def test_report_matches_the_synced_pipeline(settings, registry, instance, emulator):
    """The real models end to end: the report's total is the emulator's, to the last digit."""
    integration = registry.add("Acme", "pro", ADMIN_KEY, organization_id=ORG_ID)
    today = utc_today()
    month = parse_month(None, today)
    start = max(month.start, today - timedelta(days=6))
    assert run_range(settings, instance, integration.id, DateRange(start, today)).success

    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        report = month_report(conn, month)

    assert report.total_usd == emulator.expected_total(ORG_ID, start, today)
    assert sum(t.amount_usd for t in report.token_types) == report.total_usd
    assert sum(i.amount_usd for i in report.integrations) == report.total_usd
