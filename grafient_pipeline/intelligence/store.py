"""Budgets and alert channels in the registry (tables of registry migrations 4 and 5).

Channel secrets are vault tokens, bound to their row (associated data `alert-channel:<id>`)
exactly as admin keys are bound to their integration: never stored in clear, never shown again.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, text

from grafient_pipeline.intelligence.budgets import DEFAULT_THRESHOLDS, Budget
from grafient_pipeline.intelligence.channels import KINDS, Channel, describe
from grafient_pipeline.redact import scrub
from grafient_pipeline.registry import MAX_ERROR, InvalidInput, Registry, RegistryError

MAX_NAME = 100
MAX_BUDGET_USD = Decimal("1e12")
CHANNEL_STATUSES = ("active", "error")


class NotFound(RegistryError):
    pass


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as listings show it: no secret."""

    id: int
    name: str
    kind: str
    target: str
    digest: bool
    status: str
    last_error: str | None
    last_sent_at: str | None

    def public_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "target": self.target, "digest": self.digest,
            "status": self.status, "last_error": self.last_error, "last_sent_at": self.last_sent_at,
        }  # fmt: skip


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _name(name: str, what: str) -> tuple[str, str]:
    name = (name or "").strip()
    if not name:
        raise InvalidInput(f"the {what} needs a name")
    if len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput(f"the {what} name must be plain text of at most {MAX_NAME} characters")
    return name, unicodedata.normalize("NFC", name).casefold()


# --- budgets -------------------------------------------------------------------------------


def parse_usd(text: str) -> Decimal:
    try:
        amount = Decimal(str(text).strip().replace(",", "").removeprefix("$"))
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or not 0 < amount < MAX_BUDGET_USD:
        raise InvalidInput(
            f"--monthly wants an amount of US dollars above 0, like 2500; got {text!r}"
        )
    return amount


def parse_thresholds(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_THRESHOLDS
    parts = [p.strip().removesuffix("%") for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 0 < int(p) <= 1000 for p in parts):
        raise InvalidInput(
            f"--thresholds wants whole percents from 1 to 1000, like 50,80,100; got {text!r}"
        )
    return tuple(sorted({int(p) for p in parts}))


def add_budget(
    registry: Registry,
    name: str,
    monthly_usd: Decimal,
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS,
    *,
    integration_id: str | None = None,
    provider: str | None = None,
    project_id: str | None = None,
    model: str | None = None,
) -> Budget:
    name, key = _name(name, "budget")
    if integration_id is not None:
        integration_id = registry.get(integration_id).id  # says so if there is none
    filters = [_filter(v) for v in (provider, project_id, model)]

    def insert(conn: Connection) -> int:
        sql = text("SELECT name FROM budgets WHERE name_key = :key")
        row = conn.execute(sql, {"key": key}).fetchone()
        if row is not None:
            raise InvalidInput(
                f"a budget named {row[0]!r} exists; remove it first or pick another name"
            )
        inserted = conn.execute(
            text(
                "INSERT INTO budgets (name, name_key, monthly_usd, thresholds, integration_id, "
                "provider, project_id, model, created_at) VALUES (:name, :key, :usd, "
                ":thresholds, :integration_id, :provider, :project_id, :model, :at) RETURNING id"
            ),
            {"name": name, "key": key, "usd": str(monthly_usd),
             "thresholds": ",".join(map(str, thresholds)), "integration_id": integration_id,
             "provider": filters[0], "project_id": filters[1], "model": filters[2],
             "at": now_iso()},
        )  # fmt: skip
        return int(inserted.scalar_one())

    budget_id = registry.write(insert)
    return next(b for b in list_budgets(registry) if b.id == budget_id)


def _filter(value: str | None) -> str | None:
    value = (value or "").strip()
    if len(value) > 200 or any(unicodedata.category(c).startswith("C") for c in value):
        raise InvalidInput("a budget filter must be plain text of at most 200 characters")
    return value or None


def list_budgets(registry: Registry) -> list[Budget]:
    sql = text(
        "SELECT id, name, monthly_usd, thresholds, integration_id, provider, project_id, model "
        "FROM budgets ORDER BY id"
    )
    return registry.read(lambda conn: [_budget(row) for row in conn.execute(sql)])


def _budget(row: tuple[Any, ...]) -> Budget:
    return Budget(
        id=row[0], name=row[1], monthly_usd=Decimal(row[2]),
        thresholds=tuple(int(t) for t in row[3].split(",")),
        integration_id=row[4], provider=row[5], project_id=row[6], model=row[7],
    )  # fmt: skip


def remove_budget(registry: Registry, name: str) -> None:
    _, key = _name(name, "budget")

    def delete(conn: Connection) -> None:
        sql = text("DELETE FROM budgets WHERE name_key = :key")
        if not conn.execute(sql, {"key": key}).rowcount:
            raise NotFound(f"no budget named {name!r}; see `grafient budgets list`")

    registry.write(delete)


# --- channels ------------------------------------------------------------------------------


def _owner(channel_id: int) -> str:
    return f"alert-channel:{channel_id}"


def add_channel(
    registry: Registry,
    name: str,
    kind: str,
    settings: dict[str, Any],
    secrets: dict[str, str],
    *,
    digest: bool = False,
) -> ChannelInfo:
    name, key = _name(name, "channel")
    if kind not in KINDS:
        raise InvalidInput(f"unknown channel kind {kind!r}: choose one of {', '.join(KINDS)}")

    def insert(conn: Connection) -> int:
        sql = text("SELECT name FROM alert_channels WHERE name_key = :key")
        row = conn.execute(sql, {"key": key}).fetchone()
        if row is not None:
            raise InvalidInput(
                f"a channel named {row[0]!r} exists; remove it first or pick another name"
            )
        inserted = conn.execute(
            text(
                "INSERT INTO alert_channels (name, name_key, kind, settings, secret_token, "
                "digest, created_at) VALUES (:name, :key, :kind, :settings, '', :digest, :at) "
                "RETURNING id"
            ),
            {"name": name, "key": key, "kind": kind, "digest": int(digest), "at": now_iso(),
             "settings": json.dumps(settings, sort_keys=True)},
        )  # fmt: skip
        channel_id = int(inserted.scalar_one())
        token = registry.encrypt_secret(conn, _owner(channel_id), json.dumps(secrets))
        sql = text("UPDATE alert_channels SET secret_token = :token WHERE id = :id")
        conn.execute(sql, {"token": token, "id": channel_id})
        return channel_id

    channel_id = registry.write(insert)
    return next(c for c in list_channels(registry) if c.id == channel_id)


_CHANNEL_COLUMNS = "id, name, kind, settings, digest, status, last_error, last_sent_at"


def list_channels(registry: Registry) -> list[ChannelInfo]:
    sql = text(f"SELECT {_CHANNEL_COLUMNS} FROM alert_channels ORDER BY id")
    return registry.read(lambda conn: [_info(row) for row in conn.execute(sql)])


def _info(row: tuple[Any, ...]) -> ChannelInfo:
    settings = json.loads(row[3])
    return ChannelInfo(
        id=row[0], name=row[1], kind=row[2], target=describe(row[2], settings),
        digest=bool(row[4]), status=row[5], last_error=row[6], last_sent_at=row[7],
    )  # fmt: skip


def get_channel_info(registry: Registry, name: str) -> ChannelInfo:
    _, key = _name(name, "channel")
    sql = text(f"SELECT {_CHANNEL_COLUMNS} FROM alert_channels WHERE name_key = :key")
    row = registry.read(lambda conn: conn.execute(sql, {"key": key}).fetchone())
    if row is None:
        raise NotFound(f"no alert channel named {name!r}; see `grafient alerts list`")
    return _info(row)


def load_channel(registry: Registry, channel_id: int) -> Channel:
    """The channel with its secrets decrypted, for sending only."""
    sql = text("SELECT name, kind, settings, secret_token FROM alert_channels WHERE id = :id")
    row = registry.read(lambda conn: conn.execute(sql, {"id": channel_id}).fetchone())
    if row is None:
        raise NotFound(f"alert channel {channel_id} was removed")
    secrets = json.loads(registry.decrypt_secret(_owner(channel_id), row[3]))
    return Channel(name=row[0], kind=row[1], settings=json.loads(row[2]), secrets=secrets)


def set_channel_status(
    registry: Registry, channel_id: int, status: str, error: str | None = None
) -> None:
    if status not in CHANNEL_STATUSES:
        raise InvalidInput(f"unknown channel status {status!r}")
    reason = scrub(error)[:MAX_ERROR] if error else None
    sql = text("UPDATE alert_channels SET status = :status, last_error = :error WHERE id = :id")
    retry_now = text(
        "UPDATE alert_deliveries SET last_attempt_at = NULL "
        "WHERE channel_id = :id AND status <> 'sent'"
    )

    def update(conn: Connection) -> None:
        conn.execute(sql, {"status": status, "error": reason, "id": channel_id})
        if status == "active":  # fixed: its pending alerts go out on the next round, no backoff
            conn.execute(retry_now, {"id": channel_id})

    registry.write(update)


def remove_channel(registry: Registry, name: str) -> None:
    info = get_channel_info(registry, name)

    def delete(conn: Connection) -> None:
        conn.execute(text("DELETE FROM alert_deliveries WHERE channel_id = :id"), {"id": info.id})
        conn.execute(text("DELETE FROM alert_channels WHERE id = :id"), {"id": info.id})

    registry.write(delete)
