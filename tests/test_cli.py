"""The `grafient` command as a user runs it: real processes, the emulator over real HTTP."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.instance import get_instance
from grafient_pipeline.resources import RegistryResource
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, run_cli

SECRET_PIECES = {ADMIN_KEY[i : i + 12] for i in range(len(ADMIN_KEY) - 11)}


grafient = run_cli


def assert_no_secret(text: str) -> None:
    leaked = [piece for piece in SECRET_PIECES if piece in text]
    assert not leaked, f"key material in output: {leaked[:1]}"


def add(label: str = "Acme Prod", plan: str = "free", key: str = ADMIN_KEY):
    return grafient(
        "integrations", "add", "--label", label, "--plan", plan, "--key-stdin", "--no-backfill",
        stdin=key + "\n",
    )  # fmt: skip


def test_add_prints_the_id_and_list_masks_the_key(settings):
    added = add()
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "acme-prod"

    listed = grafient("integrations", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["id"] == "acme-prod"
    assert row["key_hint"] == f"sk-admin-...{ADMIN_KEY[-4:]}"
    assert row["organization_id"] == ORG_ID
    assert set(row) == {
        "id",
        "label",
        "provider",
        "plan",
        "status",
        "organization_id",
        "last_synced_at",
        "last_error",
        "key_hint",
    }
    table = grafient("integrations", "list")
    assert "acme-prod" in table.stdout
    for output in (added.stdout, added.stderr, listed.stdout, table.stdout):
        assert_no_secret(output)
    assert_no_secret(Path(settings.registry_path).read_bytes().decode("latin-1"))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "admin key"),
        ("sk-admin-not-a-known-key-0000000000000000000", "401"),
        ("", "no key"),
    ],
)
def test_add_refuses_keys_that_fail_test_connection(settings, key, expected):
    result = add(key=key)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert json.loads(grafient("integrations", "list", "--json").stdout) == []
    if key:
        assert key[10:22] not in result.stderr


def test_bad_input_is_one_line_and_non_zero(settings):
    assert add().returncode == 0
    duplicate = add()
    assert duplicate.returncode == 1 and "already connected" in duplicate.stderr.lower()
    for args in (
        ("integrations", "test", "no-such-id"),
        ("integrations", "remove", "no-such-id"),
        ("sync", "acme-prod", "--start", "yesterday"),
        ("sql", "SELECT * FROM no_such_table"),
    ):
        result = grafient(*args)
        assert result.returncode == 1, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("grafient: error:"), result.stderr
    assert grafient("integrations", "set-plan", "acme-prod", "gold").returncode == 2


def test_sync_outside_the_plan_window_is_refused_before_any_request(settings, emulator):
    assert add(plan="free").returncode == 0
    before = emulator.request_count
    old = (utc_today() - timedelta(days=45)).isoformat()

    result = grafient("sync", "acme-prod", "--start", old)

    assert result.returncode == 1
    earliest = (utc_today() - timedelta(days=29)).isoformat()
    assert "free plan" in result.stderr and "30-day" in result.stderr and earliest in result.stderr
    assert emulator.request_count == before


def test_force_sync_then_sql(settings, emulator):
    assert add(plan="pro").returncode == 0

    synced = grafient("sync", "acme-prod")

    assert synced.returncode == 0, synced.stderr
    assert "in-process" in synced.stdout and "rows" in synced.stdout
    today = utc_today()
    expected = emulator.expected_total(ORG_ID, today - timedelta(days=1), today)
    csv_out = grafient("sql", "SELECT sum(amount_usd)::VARCHAR AS total FROM fct_costs", "--csv")
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout.splitlines() == ["total", f"{expected:.16f}"]
    table = grafient("sql", "SELECT token_type, count(*) AS n FROM fct_costs GROUP BY 1 ORDER BY 1")
    assert "token_type" in table.stdout and "rows)" in table.stdout
    assert_no_secret(synced.stdout + synced.stderr)


def test_revoked_key_sets_error_status(settings, emulator):
    assert add().returncode == 0
    emulator.revoke_key(ADMIN_KEY)

    tested = grafient("integrations", "test", "acme-prod")

    assert tested.returncode == 1 and "revoked" in tested.stderr
    (row,) = json.loads(grafient("integrations", "list", "--json").stdout)
    assert row["status"] == "error" and row["last_error"]
    assert_no_secret(tested.stderr + row["last_error"])


def test_remove_and_purge(settings):
    assert add(plan="pro").returncode == 0
    assert grafient("sync", "acme-prod").returncode == 0
    removed = grafient("integrations", "remove", "acme-prod", "--purge")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(grafient("integrations", "list", "--json").stdout) == []
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM fct_costs").fetchone() == (0,)


def test_cli_add_then_onboarding_sensor_backfill_lands_in_duckdb(settings, emulator):
    """The daemon's path: the CLI adds, the sensor asks for one backfill, the run lands it."""
    assert add(plan="free").returncode == 0
    instance = get_instance(settings)
    defs = build_definitions(settings)
    context = dg.build_sensor_context(
        instance=instance, resources={"registry": RegistryResource(home=str(settings.home))}
    )
    (request,) = defs.resolve_sensor_def("integrations_sensor").evaluate_tick(context).run_requests

    result = defs.resolve_job_def("openai_costs_job").execute_in_process(
        instance=instance, tags=request.tags
    )

    assert result.success
    today = utc_today()
    expected = emulator.expected_total(ORG_ID, today - timedelta(days=29), today)
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM rollup_token_type_daily").fetchone()
        (days,) = conn.execute(
            "SELECT count(DISTINCT bucket_start) FROM raw_openai_costs"
        ).fetchone()
    assert total == expected
    spend_days = emulator.expected_totals(ORG_ID, today - timedelta(days=29), today)
    assert days == sum(1 for amount in spend_days.values() if amount != 0) >= 20
    (row,) = json.loads(grafient("integrations", "list", "--json").stdout)
    assert row["status"] == "active" and row["last_synced_at"]


def test_add_without_a_daemon_backfills_in_process_and_the_sensor_converges(settings, emulator):
    added = grafient(
        "integrations", "add", "--label", "Acme", "--plan", "free", "--key-stdin",
        stdin=ADMIN_KEY + "\n",
    )  # fmt: skip

    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "acme"
    assert "acme" in added.stderr and "rows" in added.stderr
    today = utc_today()
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM rollup_model_daily").fetchone()
    assert total == emulator.expected_total(ORG_ID, today - timedelta(days=29), today)
    context = dg.build_sensor_context(
        instance=get_instance(settings),
        resources={"registry": RegistryResource(home=str(settings.home))},
    )
    sensor = build_definitions(settings).resolve_sensor_def("integrations_sensor")
    assert sensor.evaluate_tick(context).run_requests == []


def test_keys_rotate_re_encrypts_under_a_new_file_master_key(settings, monkeypatch):
    monkeypatch.delenv("GRAFIENT_MASTER_KEY")
    assert add(plan="pro").returncode == 0
    master_key = Path(settings.master_key_path)
    before = master_key.read_bytes()

    rotated = grafient("keys", "rotate")

    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 key" in rotated.stdout
    assert master_key.read_bytes() != before
    assert oct(master_key.stat().st_mode & 0o777) == "0o600"
    tested = grafient("integrations", "test", "acme-prod")
    assert tested.returncode == 0, tested.stderr
    assert_no_secret(rotated.stdout + rotated.stderr + tested.stdout)


def test_keys_rotate_with_an_env_master_key_says_how(settings):
    result = grafient("keys", "rotate")
    assert result.returncode == 1
    assert "GRAFIENT_MASTER_KEY_PREVIOUS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
