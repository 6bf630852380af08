"""The README's claims that code can check: every cookbook query runs on a real warehouse."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range

README = Path(__file__).resolve().parent.parent / "README.md"


def cookbook_queries() -> list[str]:
    text = README.read_text(encoding="utf-8")
    (block,) = re.findall(r"## SQL cookbook.*?```sql\n(.*?)```", text, flags=re.DOTALL)
    statements = [s.strip() for s in re.split(r";\s*$", block, flags=re.MULTILINE)]
    return [s for s in statements if re.sub(r"--.*", "", s).strip()]


def test_the_cookbook_has_at_least_ten_queries():
    assert len(cookbook_queries()) >= 10


def test_every_cookbook_query_runs_on_a_synced_warehouse(
    settings, registry, instance, tmp_path, monkeypatch
):
    integration = registry.add("Cookbook", "pro", ADMIN_KEY, organization_id=ORG_ID)
    assert run_range(settings, instance, integration.id, last_days(10)).success
    monkeypatch.chdir(tmp_path)  # the FOCUS export writes its files here

    with duckdb.connect(settings.warehouse) as conn:
        ensure_schema(conn)
        for query in cookbook_queries():
            conn.execute(query).fetchall()
        (models,) = conn.execute("SELECT count(*) FROM v_month_to_date").fetchone()

    assert (tmp_path / "focus.parquet").stat().st_size > 0
    assert (tmp_path / "focus-last-month.csv").exists()
    # no rows this month only when the synced days all lie in an earlier month (just after midnight)
    assert models > 0 or last_days(10).end < utc_today().replace(day=1)


def test_the_readme_keeps_its_promises():
    text = README.read_text(encoding="utf-8")
    for phrase in (
        "make demo",
        "make test",
        "trusted operators",
        "has no login",
        "docs/asset-graph.png",
    ):
        assert phrase in text
    assert (README.parent / "docs" / "asset-graph.png").stat().st_size > 10_000
