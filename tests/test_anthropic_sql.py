"""Anthropic's SQL models on a real warehouse: a hand-made staged bucket through
raw_anthropic_costs and fct_costs_anthropic, every mapped field and the exact USD checked."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.providers.anthropic.cost_page import parse_page
from grafient_pipeline.sync import stage_chunks
from grafient_pipeline.warehouse import run_models

DAY = date(2026, 11, 1)
TODAY = date(2026, 11, 2)
INTEGRATION = "int_claude"


def row(amount: str, **fields: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = dict.fromkeys(
        ("context_window", "cost_type", "description", "model", "service_tier", "token_type",
         "workspace_id")
    )  # fmt: skip
    return {"amount": amount, "currency": "USD", **base, **fields}


def sonnet(amount: str, token_type: str, tier: str = "standard", window: str = "0-200k") -> dict:
    return row(amount, cost_type="tokens", model="claude-sonnet-4-5", token_type=token_type,
               service_tier=tier, context_window=window, workspace_id="wrkspc_a",
               description=f"Sonnet {token_type} {tier} {window}")  # fmt: skip


RESULTS = [
    sonnet("123.45", "uncached_input_tokens"),
    sonnet("0.0000000000001", "output_tokens", "batch"),
    sonnet("7", "cache_read_input_tokens", window="200k-1M"),
    sonnet("2.5", "cache_creation.ephemeral_5m_input_tokens"),
    sonnet("1000000.125", "cache_creation.ephemeral_1h_input_tokens"),
    row("40", cost_type="web_search", description='Web Search "Usage" \\ tools'),
    row("12.34", cost_type="code_execution"),  # no description: a composed line item
    row("3.3", cost_type="tokens", model="claude-haiku-4-5", token_type="something_new"),
]
EXPECTED = [  # (line_item, model, token_type, service_tier, usd, workspace)
    ("Sonnet uncached_input_tokens standard 0-200k", "claude-sonnet-4-5", "input", "default",
     "1.2345", "wrkspc_a"),
    ("Sonnet output_tokens batch 0-200k", "claude-sonnet-4-5", "output", "batch",
     "0.000000000000001", "wrkspc_a"),
    ("Sonnet cache_read_input_tokens standard 200k-1M", "claude-sonnet-4-5", "cached_input",
     "default", "0.07", "wrkspc_a"),
    ("Sonnet cache_creation.ephemeral_5m_input_tokens standard 0-200k", "claude-sonnet-4-5",
     "cache_write", "default", "0.025", "wrkspc_a"),
    ("Sonnet cache_creation.ephemeral_1h_input_tokens standard 0-200k", "claude-sonnet-4-5",
     "cache_write", "default", "10000.00125", "wrkspc_a"),
    ('Web Search "Usage" \\ tools', None, "other", "default", "0.4", None),
    ("code_execution", None, "other", "default", "0.1234", None),
    ("claude-haiku-4-5, tokens, something_new", "claude-haiku-4-5", "other", "default", "0.033",
     None),
]  # fmt: skip


def staged_page(tmp_path: Path) -> Path:
    body = {
        "data": [{"starting_at": "2026-11-01T00:00:00Z", "ending_at": "2026-11-02T00:00:00Z",
                  "results": RESULTS}],
        "has_more": False,
        "next_page": None,
    }  # fmt: skip
    buckets, _, _ = parse_page(json.dumps(body))
    (staged,) = stage_chunks(buckets, tmp_path / "staging", "run1", None)
    return staged.path


def test_a_staged_bucket_lands_in_raw_and_fct_exactly(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_schema(conn)
    conn.execute(
        "INSERT INTO dim_integrations VALUES (?, 'Acme Claude', 'anthropic', 'pro', 'org-c', "
        "'active', NULL)",
        [INTEGRATION],
    )
    params = {"integration_id": INTEGRATION, "start_date": DAY, "end_date": DAY}
    run_models(
        conn,
        ["raw_anthropic_costs"],
        {**params, "staging_path": str(staged_page(tmp_path)), "run_id": "run1",
         "fetched_at": datetime(2026, 11, 2, 6), "replace": True},
    )  # fmt: skip
    run_models(conn, ["fct_costs_anthropic"], {**params, "today": TODAY})

    raw = conn.execute(
        "SELECT workspace_id, description, cost_type, model, token_type, service_tier, "
        "context_window, amount_cents, amount_usd, currency, bucket_start, bucket_end, raw_json "
        "FROM raw_anthropic_costs ORDER BY rowid"
    ).fetchall()
    assert len(raw) == len(RESULTS)
    for got, sent, (_, _, _, _, usd, _) in zip(raw, RESULTS, EXPECTED, strict=True):
        fields = ("workspace_id", "description", "cost_type", "model", "token_type",
                  "service_tier", "context_window")  # fmt: skip
        assert got[:7] == tuple(sent[f] for f in fields)
        assert got[7] == Decimal(sent["amount"]) and got[8] == Decimal(usd)
        assert got[8] * 100 == got[7]
        assert got[9] == "USD"
        assert (got[10], got[11]) == (datetime(2026, 11, 1), datetime(2026, 11, 2))
        assert json.loads(got[12]) == sent

    fct = conn.execute(
        "SELECT line_item, model, token_type, service_tier, amount_usd, project_id, provider, "
        "organization_id, cost_date, api_key_id, currency, quantity, quantity_unit, is_final "
        "FROM fct_costs ORDER BY amount_usd"
    ).fetchall()
    expected = sorted(EXPECTED, key=lambda e: Decimal(e[4]))
    assert [f[:6] for f in fct] == [(*e[:4], Decimal(e[4]), e[5]) for e in expected]
    for f in fct:
        assert f[6:] == ("anthropic", "org-c", DAY, None, "USD", None, None, True)
    (total,) = conn.execute("SELECT sum(amount_usd) FROM fct_costs").fetchone()
    # 1.2345 + 0.000000000000001 + 0.07 + 0.025 + 10000.00125 + 0.4 + 0.1234 + 0.033
    assert total == Decimal("10001.887150000000001")
    (cents,) = conn.execute("SELECT sum(amount_cents) FROM raw_anthropic_costs").fetchone()
    assert cents.scaleb(-2) == total


def test_today_is_not_final_and_replace_deletes_the_slice(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_schema(conn)
    params = {"integration_id": INTEGRATION, "start_date": DAY, "end_date": DAY}
    load = {**params, "staging_path": str(staged_page(tmp_path)), "run_id": "r",
            "fetched_at": datetime(2026, 11, 1, 6)}  # fmt: skip
    run_models(conn, ["raw_anthropic_costs"], {**load, "replace": True})
    load["staging_path"] = str(staged_page(tmp_path))
    run_models(conn, ["raw_anthropic_costs"], {**load, "replace": True})
    assert conn.execute("SELECT count(*) FROM raw_anthropic_costs").fetchone() == (len(RESULTS),)
    run_models(conn, ["fct_costs_anthropic"], {**params, "today": DAY})
    assert conn.execute("SELECT DISTINCT is_final, organization_id FROM fct_costs").fetchall() == [
        (False, None)
    ]
