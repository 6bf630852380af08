"""The alert log: every alert recorded before it is sent, and marked after, per channel.

An alert's key is stable (budget + month + threshold, anomaly series + day, digest channel +
day) and is the log's primary key: recording it again does nothing, so re-runs, backfills and
restatements never repeat an alert. Delivery claims a row (`sending`, attempts + 1) and commits
before sending, then marks it `sent`. A crash between the two leaves it `sending`: the next round
sends it again, once, with the same key in the message for receivers to de-duplicate.

A permanent failure (404, 401, a refused login) marks the channel `error` with the reason and
leaves the alert pending for when the channel is fixed (`grafient alerts test NAME` succeeding
sets it active again). Transient failures back off between rounds: 1, 2, 4 ... minutes, at
most an hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text

from grafient_pipeline.intelligence import channels as channel_module
from grafient_pipeline.intelligence.channels import Channel, Delivery, RetryPolicy
from grafient_pipeline.intelligence.messages import AlertMessage
from grafient_pipeline.intelligence.store import load_channel, set_channel_status
from grafient_pipeline.registry import MAX_ERROR, Registry

ROUND_BACKOFF = timedelta(minutes=1)
MAX_ROUND_BACKOFF = timedelta(hours=1)
Sender = Callable[[Channel, AlertMessage, RetryPolicy | None], Delivery]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def record(
    registry: Registry, messages: Iterable[AlertMessage], channel_ids: list[int] | None = None
) -> list[str]:
    """Record new alerts, pending for `channel_ids` (default: every channel); returns the keys
    that were new. Known keys are left as they are."""
    batch = list(messages)

    log_sql = text(
        "INSERT INTO alert_log (key, kind, message, created_at) "
        "VALUES (:key, :kind, :message, :at) ON CONFLICT DO NOTHING"
    )
    delivery_sql = text(
        "INSERT INTO alert_deliveries (alert_key, channel_id) VALUES (:key, :channel) "
        "ON CONFLICT DO NOTHING"
    )

    def insert(conn: Connection) -> list[str]:
        targets = channel_ids
        if targets is None:
            targets = [row[0] for row in conn.execute(text("SELECT id FROM alert_channels"))]
        fresh = []
        for message in batch:
            row = {"key": message.key, "kind": message.kind, "message": message.to_json()}
            if conn.execute(log_sql, {**row, "at": _iso(datetime.now(UTC))}).rowcount:
                fresh.append(message.key)
                if targets:
                    rows = [{"key": message.key, "channel": channel} for channel in targets]
                    conn.execute(delivery_sql, rows)
        return fresh

    return registry.write(insert) if batch else []


@dataclass(frozen=True)
class LoggedAlert:
    key: str
    kind: str
    created_at: str
    sent_to: int
    pending_for: int


def list_alerts(registry: Registry, limit: int = 50) -> list[LoggedAlert]:
    sql = text(
        "SELECT l.key, l.kind, l.created_at, "
        "count(*) FILTER (WHERE d.status = 'sent'), "
        "count(*) FILTER (WHERE d.status IN ('pending', 'sending')) "
        "FROM alert_log l LEFT JOIN alert_deliveries d ON d.alert_key = l.key "
        "GROUP BY l.key ORDER BY l.created_at DESC LIMIT :limit"
    )
    return registry.read(
        lambda conn: [LoggedAlert(*row) for row in conn.execute(sql, {"limit": limit})]
    )


@dataclass
class DeliveryRound:
    sent: list[tuple[str, str]] = field(default_factory=list)  # (alert key, channel name)
    retrying: list[tuple[str, str, str]] = field(default_factory=list)  # + reason
    broken_channels: list[tuple[str, str]] = field(default_factory=list)  # (channel, reason)

    def summary(self) -> str:
        parts = [f"{len(self.sent)} sent", f"{len(self.retrying)} to retry"]
        parts += [f"channel {name} in error: {reason}" for name, reason in self.broken_channels]
        return "; ".join(parts)


def _due(registry: Registry, now: datetime, limit: int) -> list[tuple[str, int, int]]:
    sql = text(
        "SELECT d.alert_key, d.channel_id, d.attempts, d.status, d.last_attempt_at "
        "FROM alert_deliveries d JOIN alert_channels c ON c.id = d.channel_id "
        "JOIN alert_log l ON l.key = d.alert_key "
        "WHERE d.status IN ('pending', 'sending') AND c.status = 'active' "
        "ORDER BY l.created_at, d.alert_key, d.channel_id"
    )
    due = []
    for key, channel_id, attempts, status, last in registry.read(
        lambda conn: conn.execute(sql).fetchall()
    ):
        if status == "pending" and attempts and last:
            wait = min(ROUND_BACKOFF * 2 ** (attempts - 1), MAX_ROUND_BACKOFF)
            if datetime.fromisoformat(last) + wait > now:
                continue
        due.append((key, channel_id, attempts))
    return due[:limit]


def _claim(registry: Registry, key: str, channel_id: int, attempts: int, now: datetime) -> bool:
    """Mark the delivery `sending` (committed before the send); False if another took it."""
    sql = text(
        "UPDATE alert_deliveries SET status = 'sending', attempts = attempts + 1, "
        "last_attempt_at = :at WHERE alert_key = :key AND channel_id = :channel "
        "AND attempts = :attempts AND status IN ('pending', 'sending')"
    )
    params = {"at": _iso(now), "key": key, "channel": channel_id, "attempts": attempts}
    return bool(registry.write(lambda conn: conn.execute(sql, params).rowcount))


def _finish(
    registry: Registry, key: str, channel_id: int, delivery: Delivery, now: datetime
) -> None:
    sent = text(
        "UPDATE alert_deliveries SET status = 'sent', sent_at = :at, last_error = NULL "
        "WHERE alert_key = :key AND channel_id = :channel"
    )
    channel_sent = text("UPDATE alert_channels SET last_sent_at = :at WHERE id = :channel")
    failed = text(
        "UPDATE alert_deliveries SET status = 'pending', last_error = :error "
        "WHERE alert_key = :key AND channel_id = :channel"
    )
    row = {"key": key, "channel": channel_id}

    def mark(conn: Connection) -> None:
        if delivery.ok:
            conn.execute(sent, {**row, "at": _iso(now)})
            conn.execute(channel_sent, {"at": _iso(now), "channel": channel_id})
        else:
            conn.execute(failed, {**row, "error": delivery.detail[:MAX_ERROR]})

    registry.write(mark)


def _message(registry: Registry, key: str) -> AlertMessage:
    sql = text("SELECT message FROM alert_log WHERE key = :key")
    return AlertMessage.from_json(
        registry.read(lambda conn: conn.execute(sql, {"key": key}).scalar_one())
    )


def deliver_pending(
    registry: Registry,
    *,
    policy: RetryPolicy | None = None,
    send: Sender | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    limit: int = 100,
) -> DeliveryRound:
    """One delivery round over the due alerts of active channels."""
    send = send or channel_module.send
    outcome = DeliveryRound()
    loaded: dict[int, Channel] = {}
    broken: set[int] = set()
    for key, channel_id, attempts in _due(registry, now(), limit):
        if channel_id in broken:
            continue
        if channel_id not in loaded:
            loaded[channel_id] = load_channel(registry, channel_id)
        channel = loaded[channel_id]
        if not _claim(registry, key, channel_id, attempts, now()):
            continue
        delivery = send(channel, _message(registry, key), policy)
        _finish(registry, key, channel_id, delivery, now())
        if delivery.ok:
            outcome.sent.append((key, channel.name))
        elif delivery.permanent:
            broken.add(channel_id)
            set_channel_status(registry, channel_id, "error", delivery.detail)
            outcome.broken_channels.append((channel.name, delivery.detail))
        else:
            outcome.retrying.append((key, channel.name, delivery.detail))
    return outcome
