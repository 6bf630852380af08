"""Issue 19: the registry in PostgreSQL (GRAFIENT_REGISTRY_URL) on a real server (tests/postgres.py
starts it; each test has a database of its own).

The same code and SQL as on SQLite: integrations, budgets, channels and the alert log round-trip;
migrations run from an empty database; concurrent adds from several processes refuse duplicates;
the URL's password never reaches a message. (Rotation and the two-writer case: tests/
test_registry.py and tests/test_alert_delivery.py, parametrized over both databases.)
"""

from __future__ import annotations

import multiprocessing
import traceback
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from sqlalchemy import inspect

from grafient_pipeline import registry as registry_module
from grafient_pipeline import registry_db
from grafient_pipeline.intelligence import alert_log
from grafient_pipeline.intelligence.channels import Delivery
from grafient_pipeline.intelligence.messages import AlertMessage
from grafient_pipeline.intelligence.store import (
    add_budget,
    add_channel,
    get_channel_info,
    list_budgets,
    list_channels,
    load_channel,
    remove_budget,
    remove_channel,
    set_channel_status,
)
from grafient_pipeline.registry import (
    MIGRATIONS,
    DuplicateLabel,
    DuplicateOrganization,
    IntegrationNotFound,
    InvalidInput,
    Registry,
    RegistryError,
    schema_version,
    stored_key_usage,
)
from grafient_pipeline.settings import REGISTRY_URL, SettingsError, load_settings
from grafient_pipeline.vault import Vault, generate_master_key
from tests.postgres import PASSWORD, PostgresServer, free_port

SECRET = "sk-admin-Pg9TOPSECRETvalue0123456789abcdWXY7"
HOOK_URL = "https://hooks.example.com/services/T000/B000/SECRETPATHpg123"
WORKERS = 4


@pytest.fixture
def key() -> bytes:
    return generate_master_key()


@pytest.fixture
def registry(postgres_url: str, key: bytes) -> Registry:
    return Registry(postgres_url, Vault([key]))


def test_integrations_round_trip(registry: Registry) -> None:
    assert registry.path is None
    assert "***" in registry.location and PASSWORD not in registry.location
    added = registry.add("Acme Corp", "pro", SECRET, organization_id="org-1")
    assert (added.id, added.status, added.key_hint) == (
        "acme-corp",
        "backfilling",
        "sk-admin-...WXY7",
    )
    assert registry.get("acme-corp") == added and registry.api_key("acme-corp") == SECRET
    hostile = registry.add("O'Brien'; DROP TABLE integrations; -- ☕", "free", SECRET + "2")
    assert registry.get(hostile.id).label == "O'Brien'; DROP TABLE integrations; -- ☕"
    assert [i.id for i in registry.list()] == ["acme-corp", hostile.id]
    with pytest.raises(DuplicateLabel, match="'Acme Corp' already exists"):
        registry.add("  ACME corp", "free", SECRET)
    with pytest.raises(DuplicateOrganization, match="set-key acme-corp"):
        registry.add("Other", "free", SECRET, organization_id="org-1")
    assert registry.add("", "free", SECRET, organization_id="org-2").label == "org-2"

    assert registry.set_plan("acme-corp", "ultimate").plan == "ultimate"
    registry.set_status("acme-corp", "error", f"401 for key {SECRET}")
    assert SECRET not in (registry.get("acme-corp").last_error or "")
    later = datetime(2026, 5, 1, 12, tzinfo=UTC)
    registry.mark_synced("acme-corp", later)
    registry.mark_synced("acme-corp", later - timedelta(days=1))  # never moves backwards
    synced = registry.get("acme-corp")
    assert (synced.status, synced.last_error, synced.last_synced_at) == ("active", None, later)
    registry.mark_backfill_requested("acme-corp", 180)
    registry.mark_backfill_requested("acme-corp", 30)
    assert registry.get("acme-corp").backfilled_days == 180
    registry.set_organization(hostile.id, "org-9")
    assert registry.get(hostile.id).organization_id == "org-9"
    with pytest.raises(InvalidInput, match="organization org-7"):
        registry.replace_key("acme-corp", SECRET + "new", "org-7")
    assert registry.replace_key("acme-corp", SECRET + "new", "org-1").status == "active"
    assert registry.api_key("acme-corp") == SECRET + "new"

    registry.remove("acme-corp")
    assert registry.is_retired("acme-corp") and not registry.is_retired(hostile.id)
    with pytest.raises(IntegrationNotFound):
        registry.remove("acme-corp")
    assert registry.add("Acme Corp", "pro", SECRET).id == "acme-corp-2"  # ids never reused


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, channel, message, policy) -> Delivery:
        self.got.append((channel.name, message.key))
        return Delivery(True, False, "HTTP 200", 1)


def test_budgets_channels_and_alert_log_round_trip(registry: Registry) -> None:
    acme = registry.add("Acme", "pro", SECRET)
    budget = add_budget(registry, "Team", Decimal("2500.10"), (50, 80), integration_id=acme.id)
    assert (budget.monthly_usd, budget.thresholds) == (Decimal("2500.10"), (50, 80))
    add_budget(registry, "Models", Decimal(100), model="gpt-4o")
    assert [b.name for b in list_budgets(registry)] == ["Team", "Models"]
    with pytest.raises(InvalidInput, match="exists"):
        add_budget(registry, "team", Decimal(1))
    remove_budget(registry, "Team")
    assert [b.name for b in list_budgets(registry)] == ["Models"]

    ops = add_channel(registry, "ops", "slack", {"host": "hooks.example.com"}, {"url": HOOK_URL})
    add_channel(
        registry, "digest", "slack", {"host": "h.example.com"}, {"url": HOOK_URL}, digest=True
    )
    assert "SECRETPATH" not in repr(list_channels(registry))
    assert load_channel(registry, ops.id).secrets == {"url": HOOK_URL}
    set_channel_status(registry, ops.id, "error", "HTTP 404")
    assert get_channel_info(registry, "ops").last_error == "HTTP 404"
    set_channel_status(registry, ops.id, "active")

    message = AlertMessage("budget:1:2026-11:80", "budget_threshold", "Budget passed 80%", "text")
    assert alert_log.record(registry, [message], [ops.id]) == [message.key]
    assert alert_log.record(registry, [message]) == []  # recorded once
    receiver = Receiver()
    assert len(alert_log.deliver_pending(registry, send=receiver).sent) == 1
    assert alert_log.deliver_pending(registry, send=receiver).sent == []
    assert receiver.got == [("ops", message.key)]
    logged = alert_log.list_alerts(registry)
    assert [(a.key, a.sent_to, a.pending_for) for a in logged] == [(message.key, 1, 0)]
    assert get_channel_info(registry, "ops").last_sent_at is not None
    remove_channel(registry, "ops")
    assert [c.name for c in list_channels(registry)] == ["digest"]


def test_migrations_from_an_empty_database(
    postgres_url: str, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert schema_version(postgres_url) == 0 and stored_key_usage(postgres_url) == {}
    registry = Registry(
        postgres_url.replace("postgresql+psycopg2://", "postgresql://"), Vault([key])
    )
    assert schema_version(postgres_url) == len(MIGRATIONS)
    tables = set(registry.read(lambda conn: inspect(conn).get_table_names()))
    assert tables == {
        "integrations", "meta", "retired_ids", "budgets", "alert_channels", "alert_log",
        "alert_deliveries", "schema_version",
    }  # fmt: skip
    registry.add("Acme", "pro", SECRET)
    assert stored_key_usage(postgres_url) == {registry.vault.key_id: 1}

    step = ("ALTER TABLE integrations ADD COLUMN notes TEXT NOT NULL DEFAULT ''",)
    monkeypatch.setattr(registry_module, "MIGRATIONS", [*MIGRATIONS, step])
    assert Registry(postgres_url, Vault([key])).api_key("acme") == SECRET
    Registry(postgres_url, Vault([key]))  # applied once
    assert schema_version(postgres_url) == len(MIGRATIONS) + 1
    monkeypatch.undo()
    with pytest.raises(RegistryError, match="newer than this grafient"):
        Registry(postgres_url, Vault([key]))


def test_the_setting_puts_the_registry_in_postgres(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "home"
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    settings = load_settings({"GRAFIENT_HOME": str(home), REGISTRY_URL: plain})
    assert settings.registry_url == postgres_url  # the driver named, as for Dagster's URL
    registry = Registry.from_settings(settings)
    registry.add("Acme", "pro", SECRET)
    assert Registry.from_settings(settings).api_key("acme") == SECRET
    assert not settings.registry_path.exists()
    assert not [p for p in home.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert load_settings({"GRAFIENT_HOME": str(home)}).registry_target == settings.registry_path
    with pytest.raises(SettingsError, match=REGISTRY_URL) as refused:
        load_settings({"GRAFIENT_HOME": str(home), REGISTRY_URL: "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(refused.value)


def _add_once(url: str, key: bytes, worker: int, barrier: Barrier, results) -> None:
    registry = Registry(url, Vault([key]))
    outcomes = []
    for label, org in (("Acme", f"org-{worker}"), (f"Beta {worker}", "org-shared")):
        barrier.wait(timeout=60)  # every worker adds at the same moment
        try:
            outcomes.append(registry.add(label, "pro", f"{SECRET}{worker}", organization_id=org).id)
        except RegistryError as exc:
            outcomes.append(type(exc).__name__)
    results.put((worker, outcomes))


def test_concurrent_adds_from_processes_refuse_duplicates(postgres_url: str, key: bytes) -> None:
    Registry(postgres_url, Vault([key]))  # migrated once, before the race
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    workers = [
        ctx.Process(target=_add_once, args=(postgres_url, key, w, barrier, results))
        for w in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    same_label = sorted(o[0] for o in outcomes.values())
    assert same_label == ["DuplicateLabel"] * (WORKERS - 1) + ["acme"]
    same_org = [o[1] for o in outcomes.values()]
    assert sorted(same_org).count("DuplicateOrganization") == WORKERS - 1
    registry = Registry(postgres_url, Vault([key]))
    stored = registry.list()
    assert len(stored) == 2 and {i.label for i in stored} - {"Acme"} <= {
        f"Beta {w}" for w in range(WORKERS)
    }
    assert all(registry.api_key(i.id).startswith(SECRET) for i in stored)


def _assert_hidden(error: BaseException, *secrets: str) -> str:
    message = str(error)
    shown = "".join(traceback.format_exception(error)) + repr(error)
    for secret in secrets:
        assert secret not in shown
    assert "\n" not in message
    return message


def test_the_password_never_reaches_an_error(postgres_server: PostgresServer, key: bytes) -> None:
    wrong_password = "wrong-Pw-5e1d"
    url = postgres_server.url().replace(PASSWORD, wrong_password)
    with pytest.raises(RegistryError) as refused:
        Registry(url, Vault([key]))
    message = _assert_hidden(refused.value, wrong_password, PASSWORD)
    assert "password authentication failed" in message and "***" in message
    assert "GRAFIENT_REGISTRY_URL" in message

    closed_port = postgres_server.url().replace(f":{postgres_server.port}/", f":{free_port()}/")
    with pytest.raises(RegistryError) as unreachable:
        Registry(closed_port, Vault([key]))
    message = _assert_hidden(unreachable.value, PASSWORD)
    assert message.startswith("cannot connect to the registry database") and "***" in message
    with pytest.raises(RegistryError) as unread:
        stored_key_usage(closed_port)
    _assert_hidden(unread.value, PASSWORD)


def test_without_psycopg2_the_message_says_what_to_install(monkeypatch, key: bytes) -> None:
    def no_driver(*_args, **_kwargs):
        raise ImportError("No module named 'psycopg2'")

    monkeypatch.setattr(registry_db, "create_engine", no_driver)
    url = "postgresql://u:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(RegistryError, match=r"pip install 'grafient-pipeline\[postgres\]'") as info:
        Registry(url, Vault([key]))
    _assert_hidden(info.value, "hunter2")
