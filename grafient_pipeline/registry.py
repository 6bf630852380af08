"""The integration registry: integrations and their encrypted keys, shared by the webserver,
daemon, runs and CLI. A SQLite file by default; PostgreSQL with GRAFIENT_REGISTRY_URL (see
registry_db for how writers take turns, registry_schema for the migrations).

Every statement uses bound parameters. Writes are short transactions, one at a time, retried a
bounded number of times while another process holds the registry. API keys are stored only as
vault tokens; the plaintext is never stored, logged, or put in an exception.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, text

from grafient_pipeline.registry_checks import (
    ID_PATTERN,
    MAX_ERROR,
    PROVIDER,
    STATUSES,
    DuplicateLabel,
    DuplicateOrganization,
    IntegrationNotFound,
    InvalidInput,
    check_api_key,
    check_id,
    check_label,
    check_org,
    check_plan,
    clean_error,
    iso,
    key_hint,
    label_key,
    not_found,
    slugify,
)
from grafient_pipeline.registry_db import DATABASE_ERRORS, SQLITE, Database, RegistryError, locate
from grafient_pipeline.registry_schema import (
    CHANNELS_MIGRATION,
    MIGRATIONS,
    has_table,
    migrate,
    stored_version,
)
from grafient_pipeline.settings import Settings
from grafient_pipeline.vault import TOKEN_VERSION, Vault, load_vault, token_key_id

__all__ = [  # the registry's public names, wherever they are defined
    "ID_PATTERN",
    "MAX_ERROR",
    "MIGRATIONS",
    "PROVIDER",
    "STATUSES",
    "DuplicateLabel",
    "DuplicateOrganization",
    "Integration",
    "IntegrationNotFound",
    "InvalidInput",
    "Registry",
    "RegistryError",
    "key_hint",
    "schema_version",
    "slugify",
    "stored_key_usage",
]

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
LOCK_RETRIES = 6

COLUMNS = (
    "id, provider, label, plan, organization_id, status, last_error, created_at, "
    "last_synced_at, key_hint, backfilled_days, base_url"
)


@dataclass(frozen=True)
class Integration:
    id: str
    provider: str
    label: str
    plan: str
    organization_id: str | None
    status: str
    last_error: str | None
    created_at: datetime
    last_synced_at: datetime | None
    key_hint: str
    backfilled_days: int
    base_url: str | None = None  # None: the provider's public API

    def public_dict(self) -> dict[str, Any]:
        synced = self.last_synced_at.isoformat() if self.last_synced_at else None
        return {
            "id": self.id,
            "label": self.label,
            "provider": self.provider,
            "plan": self.plan,
            "status": self.status,
            "organization_id": self.organization_id,
            "last_synced_at": synced,
            "last_error": self.last_error,
            "key_hint": self.key_hint,
        }


_MARK_SYNCED = (
    "UPDATE integrations SET status = 'active', last_error = NULL, last_synced_at = "
    "CASE WHEN last_synced_at IS NULL OR last_synced_at < :at THEN :at "
    "ELSE last_synced_at END WHERE id = :id"
)


class Registry:
    """The registry at `target`: a SQLite file path, or a database URL (GRAFIENT_REGISTRY_URL).

    `path` is the SQLite file, None for PostgreSQL; `location` says where it is for people
    (a URL with its password masked)."""

    def __init__(
        self,
        target: Path | str,
        vault: Vault,
        vault_loader: Callable[[], Vault] | None = None,
    ) -> None:
        self._db = Database(locate(target))
        self.path: Path | None = self._db.location.path
        self.location = self._db.location.shown
        self._vault = vault
        self._vault_loader = vault_loader
        if self.path is not None:
            self._prepare_file()
        if self._read(stored_version) != len(MIGRATIONS):
            if self._db.dialect == SQLITE:
                self._read(_enable_wal)
            self._write(lambda conn: migrate(conn, MIGRATIONS))

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        target = settings.registry_target

        def vault_loader() -> Vault:
            return load_vault(settings, key_usage=lambda: stored_key_usage(target))

        return cls(target, vault_loader(), vault_loader)

    @property
    def vault(self) -> Vault:
        return self._vault

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a connection (other stores in this database, e.g. the intelligence ones)."""
        return self._read(fn)

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one short write transaction, retried while another process writes."""
        return self._write(fn)

    def encrypt_secret(self, conn: Connection, owner: str, plaintext: str) -> str:
        """A vault token for a secret bound to `owner` (a row id), under the pinned key."""
        return self._vault.encrypt(owner, plaintext, self._encrypt_key_id(conn))

    def decrypt_secret(self, owner: str, token: str) -> str:
        if not self._vault.has_key(token_key_id(token)):
            self._reload_vault()
        return self._vault.decrypt(owner, token)

    # --- reads ---------------------------------------------------------------------------

    def get(self, integration_id: str) -> Integration:
        check_id(integration_id)
        return self._read(lambda conn: _fetch(conn, integration_id))

    def list(self) -> list[Integration]:
        sql = text(f"SELECT {COLUMNS} FROM integrations ORDER BY created_at, id")
        return self._read(lambda conn: [_to_integration(r) for r in conn.execute(sql)])

    def is_retired(self, integration_id: str) -> bool:
        """True for the id of an integration that was removed (ids are never reused)."""
        check_id(integration_id)
        sql = text("SELECT 1 FROM retired_ids WHERE id = :id")
        return self._read(
            lambda conn: conn.execute(sql, {"id": integration_id}).fetchone() is not None
        )

    def api_key(self, integration_id: str) -> str:
        check_id(integration_id)
        token = self._read(lambda conn: _token(conn, integration_id))
        if not self._vault.has_key(token_key_id(token)):
            self._reload_vault()
        return self._vault.decrypt(integration_id, token)

    # --- writes --------------------------------------------------------------------------

    def add(
        self,
        label: str,
        plan: str,
        api_key: str,
        organization_id: str | None = None,
        *,
        provider: str = PROVIDER,
        base_url: str | None = None,
    ) -> Integration:
        plan = check_plan(plan)
        secret = check_api_key(api_key)
        org = check_org(organization_id)
        label = check_label(label)

        def insert(conn: Connection) -> str:
            name = label or _generated_label(conn, org)
            _refuse_duplicate(conn, name)
            _refuse_same_organization(conn, provider, org)
            new_id = _free_id(conn, slugify(name))
            token = self._vault.encrypt(new_id, secret, self._encrypt_key_id(conn))
            conn.execute(
                text(
                    "INSERT INTO integrations (id, provider, label, label_key, plan,"
                    " organization_id, status, created_at, key_hint, key_token, base_url)"
                    " VALUES (:id, :provider, :label, :label_key, :plan, :org, 'backfilling',"
                    " :created_at, :key_hint, :key_token, :base_url)"
                ),
                {"id": new_id, "provider": provider, "label": name, "label_key": label_key(name),
                 "plan": plan, "org": org, "created_at": iso(datetime.now(UTC)),
                 "key_hint": key_hint(secret), "key_token": token, "base_url": base_url},
            )  # fmt: skip
            return new_id

        return self.get(self._write(insert))

    def replace_key(
        self, integration_id: str, api_key: str, organization_id: str | None
    ) -> Integration:
        """A new key for the same organization, in one transaction: the old key is gone, the
        status is back to active."""
        check_id(integration_id)
        secret = check_api_key(api_key)
        org = check_org(organization_id)

        def replace(conn: Connection) -> None:
            current = _fetch(conn, integration_id)
            if current.organization_id and org and org != current.organization_id:
                raise InvalidInput(
                    f"this key belongs to organization {org}, but {integration_id} is "
                    f"{current.organization_id}: use a key of the same organization (or add the "
                    "other organization as its own integration)"
                )
            token = self._vault.encrypt(integration_id, secret, self._encrypt_key_id(conn))
            conn.execute(
                text(
                    "UPDATE integrations SET key_token = :token, key_hint = :hint, "
                    "status = 'active', last_error = NULL, "
                    "organization_id = coalesce(organization_id, :org) WHERE id = :id"
                ),
                {"token": token, "hint": key_hint(secret), "org": org, "id": integration_id},
            )

        self._write(replace)
        return self.get(integration_id)

    def remove(self, integration_id: str) -> None:
        check_id(integration_id)
        delete_sql = text("DELETE FROM integrations WHERE id = :id")
        retire_sql = text(
            "INSERT INTO retired_ids (id, removed_at) VALUES (:id, :at) ON CONFLICT DO NOTHING"
        )

        def delete(conn: Connection) -> None:
            if not conn.execute(delete_sql, {"id": integration_id}).rowcount:
                raise not_found(integration_id)
            conn.execute(retire_sql, {"id": integration_id, "at": iso(datetime.now(UTC))})

        self._write(delete)

    def set_plan(self, integration_id: str, plan: str) -> Integration:
        sql = "UPDATE integrations SET plan = :value WHERE id = :id"
        self._update(integration_id, sql, {"value": check_plan(plan)})
        return self.get(integration_id)

    def set_status(self, integration_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
        sql = "UPDATE integrations SET status = :status, last_error = :error WHERE id = :id"
        self._update(integration_id, sql, {"status": status, "error": clean_error(error)})

    def mark_synced(self, integration_id: str, at: datetime) -> None:
        self._update(integration_id, _MARK_SYNCED, {"at": iso(at)})

    def mark_synced_many(self, integration_ids: list[str], at: datetime) -> None:
        """``mark_synced`` for several integrations in one transaction (a daily batch: one
        durable commit instead of one each); ids removed meanwhile are skipped."""
        for integration_id in integration_ids:
            check_id(integration_id)
        if not integration_ids:
            return
        stamp = iso(at)
        rows = [{"at": stamp, "id": integration_id} for integration_id in integration_ids]
        self._write(lambda conn: conn.execute(text(_MARK_SYNCED), rows))

    def set_organization(self, integration_id: str, organization_id: str | None) -> None:
        sql = "UPDATE integrations SET organization_id = :org WHERE id = :id"
        self._update(integration_id, sql, {"org": check_org(organization_id)})

    def mark_backfill_requested(self, integration_id: str, days: int) -> None:
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36500:
            raise InvalidInput(f"backfill days must be a whole number >= 0, got {days!r}")
        sql = (  # the larger of the two: SQLite's max(a, b) is PostgreSQL's greatest(a, b)
            "UPDATE integrations SET backfilled_days = CASE WHEN backfilled_days < :days "
            "THEN :days ELSE backfilled_days END WHERE id = :id"
        )
        self._update(integration_id, sql, {"days": days})

    def rotate_master_key(self, new_vault: Vault) -> int:
        """Re-encrypt every stored key under ``new_vault``'s current key, all or nothing: one
        write transaction, so no other writer runs in between."""

        def reencrypt(conn: Connection) -> int:
            rows = conn.execute(text("SELECT id, key_token FROM integrations")).fetchall()
            update = text("UPDATE integrations SET key_token = :token WHERE id = :id")
            for integration_id, token in rows:
                source = new_vault if new_vault.has_key(token_key_id(token)) else self._vault
                plain = source.decrypt(integration_id, token)
                fresh = new_vault.encrypt(integration_id, plain)
                conn.execute(update, {"token": fresh, "id": integration_id})
            channels = conn.execute(text("SELECT id, secret_token FROM alert_channels"))
            update = text("UPDATE alert_channels SET secret_token = :token WHERE id = :id")
            for channel_id, token in channels.fetchall():
                owner = f"alert-channel:{channel_id}"
                source = new_vault if new_vault.has_key(token_key_id(token)) else self._vault
                fresh = new_vault.encrypt(owner, source.decrypt(owner, token))
                conn.execute(update, {"token": fresh, "id": channel_id})
            _pin_master_key(conn, new_vault.key_id)
            return len(rows)

        count = self._write(reencrypt)
        self._vault = new_vault
        return count

    # --- plumbing ------------------------------------------------------------------------

    def _update(self, integration_id: str, sql: str, params: dict[str, Any]) -> None:
        check_id(integration_id)
        statement = text(sql)

        def run(conn: Connection) -> None:
            if conn.execute(statement, {**params, "id": integration_id}).rowcount == 0:
                raise not_found(integration_id)

        self._write(run)

    def _encrypt_key_id(self, conn: Connection) -> str:
        """The master key new tokens use: the one the registry is pinned to (by rotation).

        A process whose key differs (stale after a rotation, or a different
        GRAFIENT_MASTER_KEY) must not write tokens the other processes cannot read.
        """
        sql = text("SELECT value FROM meta WHERE name = 'master_key_id'")
        row = conn.execute(sql).fetchone()
        wanted = row[0] if row else self._vault.key_id
        if not self._vault.has_key(wanted):
            self._reload_vault()
        if not self._vault.has_key(wanted):
            sql = text(
                "SELECT 1 FROM integrations WHERE key_token LIKE :pattern UNION ALL "
                "SELECT 1 FROM alert_channels WHERE secret_token LIKE :pattern LIMIT 1"
            )
            pattern = f"{TOKEN_VERSION}:{wanted}:%"
            if conn.execute(sql, {"pattern": pattern}).fetchone() is not None:
                raise RegistryError(
                    f"the stored keys use master key {wanted}, which this process has not "
                    "loaded: set GRAFIENT_MASTER_KEY to that key, or restart this process if "
                    "the key was just rotated"
                )
            wanted = self._vault.key_id  # nobody uses the old key any more
        _pin_master_key(conn, wanted)
        return wanted

    def _reload_vault(self) -> None:
        if self._vault_loader is not None:
            self._vault = self._vault_loader()

    def _prepare_file(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as exc:
            raise self._db.unwritable(exc.strerror or str(exc)) from None

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self._retry(fn, write=False)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self._retry(fn, write=True)

    def _retry(self, fn: Callable[[Connection], T], write: bool) -> T:
        run = self._db.write if write else self._db.read
        for attempt in range(LOCK_RETRIES):
            try:
                return run(fn, BUSY_TIMEOUT_S)
            except DATABASE_ERRORS as exc:
                if not self._db.is_busy(exc) or attempt == LOCK_RETRIES - 1:
                    raise self._db.translate(exc) from None
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")


# --- SQL helpers -----------------------------------------------------------------------------


def _enable_wal(conn: Connection) -> None:
    conn.exec_driver_sql("PRAGMA journal_mode = WAL")  # outside a transaction: a read


def _pin_master_key(conn: Connection, key_id: str) -> None:
    conn.execute(
        text(
            "INSERT INTO meta (name, value) VALUES ('master_key_id', :key_id) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        ),
        {"key_id": key_id},
    )


def _read_once(target: Path | str, fn: Callable[[Connection], T], what: str) -> T:
    database = Database(locate(target))
    try:
        return database.read(fn, BUSY_TIMEOUT_S)
    except DATABASE_ERRORS as exc:
        raise RegistryError(
            f"cannot read {database.location.shown} {what}: {database.reason(exc)}"
        ) from None


def schema_version(target: Path | str) -> int:
    """The schema version stored in a registry (0 for a new or empty one)."""
    return _read_once(target, stored_version, "to see its schema version")


def stored_key_usage(target: Path | str) -> dict[str, int]:
    """How many stored API keys each master key id encrypted; empty for a new registry.

    Read before the vault exists (so without a Registry): the vault asks it before creating
    a master key, which is safe only when no stored key needs an old one.
    """
    path = locate(target).path
    if path is not None and not path.exists():
        return {}

    def tokens(conn: Connection) -> list[str]:
        if not has_table(conn, "integrations"):
            return []
        found = [row[0] for row in conn.execute(text("SELECT key_token FROM integrations"))]
        if stored_version(conn) >= CHANNELS_MIGRATION:
            sql = text("SELECT secret_token FROM alert_channels")
            found += [row[0] for row in conn.execute(sql)]
        return found

    what = "to see which master key its stored API keys need"
    stored = _read_once(target, tokens, what)
    return dict(Counter(key_id for key_id in map(token_key_id, stored) if key_id is not None))


def _fetch(conn: Connection, integration_id: str) -> Integration:
    sql = text(f"SELECT {COLUMNS} FROM integrations WHERE id = :id")
    row = conn.execute(sql, {"id": integration_id}).fetchone()
    if row is None:
        raise not_found(integration_id)
    return _to_integration(tuple(row))


def _token(conn: Connection, integration_id: str) -> str:
    sql = text("SELECT key_token FROM integrations WHERE id = :id")
    row = conn.execute(sql, {"id": integration_id}).fetchone()
    if row is None:
        raise not_found(integration_id)
    return str(row[0])


def _to_integration(row: Any) -> Integration:
    return Integration(
        id=row[0],
        provider=row[1],
        label=row[2],
        plan=row[3],
        organization_id=row[4],
        status=row[5],
        last_error=row[6],
        created_at=datetime.fromisoformat(row[7]),
        last_synced_at=datetime.fromisoformat(row[8]) if row[8] else None,
        key_hint=row[9],
        backfilled_days=int(row[10]),
        base_url=row[11],
    )


def _refuse_duplicate(conn: Connection, label: str) -> None:
    sql = text("SELECT id, label FROM integrations WHERE label_key = :key")
    row = conn.execute(sql, {"key": label_key(label)}).fetchone()
    if row is not None:
        raise DuplicateLabel(
            f"an integration labelled {row[1]!r} already exists (id {row[0]}); choose another label"
        )


def _refuse_same_organization(conn: Connection, provider: str, organization_id: str | None) -> None:
    if organization_id is None:
        return
    sql = text(
        "SELECT id, label FROM integrations WHERE provider = :provider AND organization_id = :org"
    )
    row = conn.execute(sql, {"provider": provider, "org": organization_id}).fetchone()
    if row is not None:
        raise DuplicateOrganization(
            f"organization {organization_id} is already connected as {row[1]!r} (id {row[0]}); "
            "a second integration would count its spend twice: to use a new key for it, run "
            f"`grafient integrations set-key {row[0]}`"
        )


def _free_id(conn: Connection, base: str) -> str:
    sql = text("SELECT id FROM integrations UNION SELECT id FROM retired_ids")
    taken = {r[0] for r in conn.execute(sql)}
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _generated_label(conn: Connection, organization_id: str | None) -> str:
    taken = {r[0] for r in conn.execute(text("SELECT label_key FROM integrations"))}
    if organization_id and label_key(organization_id) not in taken:
        return organization_id
    n = len(taken) + 1
    while label_key(f"OpenAI organization {n}") in taken:
        n += 1
    return f"OpenAI organization {n}"
