"""Issue 16: the alert log: recorded before sending, marked after; each alert arrives once
through re-runs, a crash between record and send, and a restatement; a permanent failure marks
the channel error and keeps the alert pending; channel secrets are vault tokens."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from grafient_pipeline.intelligence import alert_log
from grafient_pipeline.intelligence.channels import Channel, Delivery
from grafient_pipeline.intelligence.messages import AlertMessage
from grafient_pipeline.intelligence.store import (
    add_budget,
    add_channel,
    get_channel_info,
    list_budgets,
    list_channels,
    load_channel,
    parse_thresholds,
    parse_usd,
    remove_budget,
)
from grafient_pipeline.registry import InvalidInput, Registry, RegistryError
from grafient_pipeline.settings import load_settings
from grafient_pipeline.vault import Vault

HOOK_URL = "https://hooks.example.com/services/T000/B000/SECRETPATHxyz123"
MESSAGE = AlertMessage("budget:1:2026-11:80", "budget_threshold", "Budget passed 80%", "text")


class Receiver:
    """A fake sender: records deliveries; can fail, or crash after sending."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.answer = Delivery(True, False, "HTTP 200", 1)
        self.crash_after_send = False

    def __call__(self, channel: Channel, message: AlertMessage, policy) -> Delivery:
        if self.answer.ok:
            self.got.append((channel.name, message.key))
        if self.crash_after_send:
            raise SystemExit("power cut")
        return self.answer


@pytest.fixture
def store(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("GRAFIENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GRAFIENT_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    return Registry.from_settings(load_settings())


def slack_channel(store: Registry, name: str = "ops"):
    return add_channel(store, name, "slack", {"host": "hooks.example.com"}, {"url": HOOK_URL})


def test_channel_secret_is_a_vault_token_bound_to_its_row(store: Registry):
    info = slack_channel(store)
    raw = sqlite3.connect(store.path).execute("SELECT * FROM alert_channels").fetchall()
    assert HOOK_URL not in repr(raw) and "SECRETPATH" not in repr(raw)
    assert load_channel(store, info.id).secrets == {"url": HOOK_URL}
    assert info.target == "slack to hooks.example.com"
    assert "SECRETPATH" not in repr(list_channels(store))
    # A token moved to another row does not decrypt there.
    other = slack_channel(store, "second")
    conn = sqlite3.connect(store.path)
    token = conn.execute("SELECT secret_token FROM alert_channels WHERE id = ?", (info.id,))
    conn.execute("UPDATE alert_channels SET secret_token = ? WHERE id = ?",
                 (token.fetchone()[0], other.id))  # fmt: skip
    conn.commit()
    with pytest.raises(Exception, match="tampered"):
        load_channel(store, other.id)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_master_key_rotation_reencrypts_channel_secrets(store: Registry, backend, request):
    if backend == "postgresql":  # the same, with the registry in PostgreSQL
        store = Registry(request.getfixturevalue("postgres_url"), store.vault)
    info = slack_channel(store)
    new_vault = Vault([bytes(range(1, 33))])
    store.rotate_master_key(new_vault)
    sql = text("SELECT secret_token FROM alert_channels")
    token = store.read(lambda conn: conn.execute(sql).scalar_one())
    assert token.startswith(f"gv1:{new_vault.key_id}:")
    assert load_channel(store, info.id).secrets["url"] == HOOK_URL


def test_each_alert_is_delivered_once_across_reruns(store: Registry):
    slack_channel(store)
    receiver = Receiver()

    assert alert_log.record(store, [MESSAGE]) == [MESSAGE.key]
    assert alert_log.record(store, [MESSAGE]) == []  # a re-run records nothing new
    first = alert_log.deliver_pending(store, send=receiver)
    second = alert_log.deliver_pending(store, send=receiver)

    assert receiver.got == [("ops", MESSAGE.key)]
    assert len(first.sent) == 1 and second.sent == []
    assert alert_log.record(store, [MESSAGE]) == []  # and after delivery neither
    assert alert_log.deliver_pending(store, send=receiver).sent == []


def test_a_crash_between_send_and_mark_resends_once_with_the_same_key(store: Registry):
    slack_channel(store)
    alert_log.record(store, [MESSAGE])
    receiver = Receiver()
    receiver.crash_after_send = True
    with pytest.raises(SystemExit):
        alert_log.deliver_pending(store, send=receiver)
    receiver.crash_after_send = False

    alert_log.deliver_pending(store, send=receiver)
    alert_log.deliver_pending(store, send=receiver)

    assert receiver.got == [("ops", MESSAGE.key), ("ops", MESSAGE.key)]


def test_a_crash_between_record_and_send_sends_on_the_next_round(store: Registry):
    slack_channel(store)
    alert_log.record(store, [MESSAGE])  # ... and the process died here
    receiver = Receiver()
    alert_log.deliver_pending(store, send=receiver)
    assert receiver.got == [("ops", MESSAGE.key)]


def test_permanent_failure_marks_the_channel_and_keeps_the_alert_pending(store: Registry):
    info = slack_channel(store)
    alert_log.record(store, [MESSAGE])
    receiver = Receiver()
    receiver.answer = Delivery(False, True, "HTTP 404 from hooks.example.com (no_service)", 1)

    outcome = alert_log.deliver_pending(store, send=receiver)

    assert outcome.broken_channels == [("ops", "HTTP 404 from hooks.example.com (no_service)")]
    info = get_channel_info(store, "ops")
    assert info.status == "error" and "404" in (info.last_error or "")
    receiver.answer = Delivery(True, False, "HTTP 200", 1)
    assert alert_log.deliver_pending(store, send=receiver).sent == []  # channel in error: wait
    from grafient_pipeline.intelligence.store import set_channel_status

    set_channel_status(store, info.id, "active")  # what a passing `alerts test` does
    assert alert_log.deliver_pending(store, send=receiver).sent == [(MESSAGE.key, "ops")]


def test_transient_failures_back_off_between_rounds(store: Registry):
    slack_channel(store)
    alert_log.record(store, [MESSAGE])
    receiver = Receiver()
    receiver.answer = Delivery(False, False, "HTTP 503 from hooks.example.com", 4)
    clock = [datetime(2026, 11, 9, 9, 0, tzinfo=UTC)]

    def now() -> datetime:
        return clock[0]

    assert alert_log.deliver_pending(store, send=receiver, now=now).retrying
    assert not alert_log.deliver_pending(store, send=receiver, now=now).retrying  # backing off
    clock[0] += timedelta(minutes=1, seconds=1)
    receiver.answer = Delivery(True, False, "HTTP 200", 1)
    assert alert_log.deliver_pending(store, send=receiver, now=now).sent


def test_digest_goes_only_to_its_channel(store: Registry):
    a = slack_channel(store, "a")
    slack_channel(store, "b")
    digest = AlertMessage("digest:a:2026-11-08", "digest", "Digest", "text")
    alert_log.record(store, [digest], channel_ids=[a.id])
    receiver = Receiver()
    alert_log.deliver_pending(store, send=receiver)
    assert receiver.got == [("a", "digest:a:2026-11-08")]


def test_budgets_store_and_input_checks(store: Registry):
    budget = add_budget(store, "Research", parse_usd("2,500.50"), parse_thresholds("80,50"),
                        model="gpt-4o")  # fmt: skip
    assert (budget.monthly_usd, budget.thresholds, budget.scope) == (
        parse_usd("2500.50"),
        (50, 80),
        "model=gpt-4o",
    )
    with pytest.raises(InvalidInput, match="exists"):
        add_budget(store, "research", parse_usd("1"))
    with pytest.raises(RegistryError, match="no integration"):
        add_budget(store, "x", parse_usd("1"), integration_id="nope")
    for bad in ("0", "-5", "abc", "NaN", "1e13"):
        with pytest.raises(InvalidInput, match="--monthly"):
            parse_usd(bad)
    for bad in ("", "0", "50,x", "2000"):
        with pytest.raises(InvalidInput, match="--thresholds"):
            parse_thresholds(bad)
    remove_budget(store, "RESEARCH")
    assert list_budgets(store) == []
