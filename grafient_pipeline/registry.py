"""The integration registry: one SQLite file shared by the webserver, daemon, runs and CLI.

Every statement uses bound parameters. Writes are short ``BEGIN IMMEDIATE`` transactions,
retried a bounded number of times when another process holds the lock. API keys are stored
only as vault tokens; the plaintext is never stored, logged, or put in an exception.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from grafient_pipeline.plans import PLANS
from grafient_pipeline.redact import scrub
from grafient_pipeline.settings import Settings
from grafient_pipeline.vault import TOKEN_VERSION, Vault, load_vault, token_key_id

T = TypeVar("T")

STATUSES = ("active", "backfilling", "error")
PROVIDER = "openai"
MAX_LABEL = 100
MAX_SLUG = 48
MAX_ERROR = 2000
BUSY_TIMEOUT_S = 5.0
LOCK_RETRIES = 6
ID_PATTERN = re.compile(r"[a-z0-9-]{1,64}")  # whole string: fullmatch (`$` allows a final \n)
FORBIDDEN_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}

# Each migration is a list of single SQL statements, applied in order, once, in one transaction.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE integrations (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            label TEXT NOT NULL,
            label_key TEXT NOT NULL UNIQUE,
            plan TEXT NOT NULL,
            organization_id TEXT,
            status TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            last_synced_at TEXT,
            key_hint TEXT NOT NULL,
            key_token TEXT NOT NULL,
            backfilled_days INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # Ids of removed integrations are never handed out again: their warehouse rows may remain.
    ("CREATE TABLE retired_ids (id TEXT PRIMARY KEY, removed_at TEXT NOT NULL)",),
    # Where each integration's API is (the demo's emulator, a proxy): NULL is the provider's own.
    ("ALTER TABLE integrations ADD COLUMN base_url TEXT",),
    # Spend intelligence (issue 16): see grafient_pipeline/intelligence/store.py.
    (
        """CREATE TABLE budgets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            monthly_usd TEXT NOT NULL,
            thresholds TEXT NOT NULL,
            integration_id TEXT,
            provider TEXT,
            project_id TEXT,
            model TEXT,
            created_at TEXT NOT NULL
        )""",
    ),
    # Secrets (webhook URLs, signing secrets, SMTP passwords) only as vault tokens.
    (
        """CREATE TABLE alert_channels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            settings TEXT NOT NULL,
            secret_token TEXT NOT NULL,
            digest INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',
            last_error TEXT,
            created_at TEXT NOT NULL,
            last_sent_at TEXT
        )""",
    ),
    # Recorded before sending, marked after: one row per alert key, one per (alert, channel).
    (
        """CREATE TABLE alert_log (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE alert_deliveries (
            alert_key TEXT NOT NULL REFERENCES alert_log (key),
            channel_id INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_attempt_at TEXT,
            sent_at TEXT,
            last_error TEXT,
            PRIMARY KEY (alert_key, channel_id)
        )""",
    ),
]

CHANNELS_MIGRATION = 5  # the registry version that has alert_channels

COLUMNS = (
    "id, provider, label, plan, organization_id, status, last_error, created_at, "
    "last_synced_at, key_hint, backfilled_days, base_url"
)


class RegistryError(Exception):
    """A registry problem; the message is one line a user can act on."""


class IntegrationNotFound(RegistryError):
    pass


class DuplicateLabel(RegistryError):
    pass


class DuplicateOrganization(RegistryError):
    """The organization already has an integration: a second one would count its spend twice."""


class InvalidInput(RegistryError):
    pass


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


class Registry:
    def __init__(
        self, path: Path, vault: Vault, vault_loader: Callable[[], Vault] | None = None
    ) -> None:
        self.path = Path(path)
        self._vault = vault
        self._vault_loader = vault_loader
        self._prepare_file()
        if self._read(_stored_version) != len(MIGRATIONS):
            self._read(_enable_wal)
            self._write(_migrate)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        path = settings.registry_path

        def vault_loader() -> Vault:
            return load_vault(settings, key_usage=lambda: stored_key_usage(path))

        return cls(path, vault_loader(), vault_loader)

    @property
    def vault(self) -> Vault:
        return self._vault

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a connection (other stores in this file, e.g. the intelligence ones)."""
        return self._read(fn)

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one short write transaction, retried while another process writes."""
        return self._write(fn)

    def encrypt_secret(self, conn: sqlite3.Connection, owner: str, plaintext: str) -> str:
        """A vault token for a secret bound to `owner` (a row id), under the pinned key."""
        return self._vault.encrypt(owner, plaintext, self._encrypt_key_id(conn))

    def decrypt_secret(self, owner: str, token: str) -> str:
        if not self._vault.has_key(token_key_id(token)):
            self._reload_vault()
        return self._vault.decrypt(owner, token)

    # --- reads ---------------------------------------------------------------------------

    def get(self, integration_id: str) -> Integration:
        _check_id(integration_id)
        return self._read(lambda conn: _fetch(conn, integration_id))

    def list(self) -> list[Integration]:
        sql = f"SELECT {COLUMNS} FROM integrations ORDER BY created_at, rowid"
        return self._read(lambda conn: [_to_integration(r) for r in conn.execute(sql)])

    def is_retired(self, integration_id: str) -> bool:
        """True for the id of an integration that was removed (ids are never reused)."""
        _check_id(integration_id)
        sql = "SELECT 1 FROM retired_ids WHERE id = ?"
        return self._read(lambda conn: conn.execute(sql, (integration_id,)).fetchone() is not None)

    def api_key(self, integration_id: str) -> str:
        _check_id(integration_id)
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
        plan = _check_plan(plan)
        secret = _check_api_key(api_key)
        org = _check_org(organization_id)
        label = _check_label(label)

        def insert(conn: sqlite3.Connection) -> str:
            name = label or _generated_label(conn, org)
            _refuse_duplicate(conn, name)
            _refuse_same_organization(conn, provider, org)
            new_id = _free_id(conn, slugify(name))
            token = self._vault.encrypt(new_id, secret, self._encrypt_key_id(conn))
            conn.execute(
                "INSERT INTO integrations (id, provider, label, label_key, plan, organization_id,"
                " status, created_at, key_hint, key_token, base_url)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (new_id, provider, name, _label_key(name), plan, org, "backfilling",
                 _iso(datetime.now(UTC)), key_hint(secret), token, base_url),
            )  # fmt: skip
            return new_id

        return self.get(self._write(insert))

    def replace_key(
        self, integration_id: str, api_key: str, organization_id: str | None
    ) -> Integration:
        """A new key for the same organization, in one transaction: the old key is gone, the
        status is back to active."""
        _check_id(integration_id)
        secret = _check_api_key(api_key)
        org = _check_org(organization_id)

        def replace(conn: sqlite3.Connection) -> None:
            current = _fetch(conn, integration_id)
            if current.organization_id and org and org != current.organization_id:
                raise InvalidInput(
                    f"this key belongs to organization {org}, but {integration_id} is "
                    f"{current.organization_id}: use a key of the same organization (or add the "
                    "other organization as its own integration)"
                )
            token = self._vault.encrypt(integration_id, secret, self._encrypt_key_id(conn))
            conn.execute(
                "UPDATE integrations SET key_token = ?, key_hint = ?, status = 'active', "
                "last_error = NULL, organization_id = coalesce(organization_id, ?) WHERE id = ?",
                (token, key_hint(secret), org, integration_id),
            )

        self._write(replace)
        return self.get(integration_id)

    def remove(self, integration_id: str) -> None:
        _check_id(integration_id)

        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM integrations WHERE id = ?", (integration_id,)).rowcount:
                conn.execute(
                    "INSERT OR IGNORE INTO retired_ids VALUES (?, ?)",
                    (integration_id, _iso(datetime.now(UTC))),
                )
            else:
                raise _not_found(integration_id)

        self._write(delete)

    def set_plan(self, integration_id: str, plan: str) -> Integration:
        sql = "UPDATE integrations SET plan = ? WHERE id = ?"
        self._update(integration_id, sql, (_check_plan(plan),))
        return self.get(integration_id)

    def set_status(self, integration_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}: choose one of {', '.join(STATUSES)}")
        sql = "UPDATE integrations SET status = ?, last_error = ? WHERE id = ?"
        self._update(integration_id, sql, (status, _clean_error(error)))

    def mark_synced(self, integration_id: str, at: datetime) -> None:
        stamp = _iso(at)
        sql = (
            "UPDATE integrations SET status = 'active', last_error = NULL, last_synced_at = "
            "CASE WHEN last_synced_at IS NULL OR last_synced_at < ? THEN ? "
            "ELSE last_synced_at END WHERE id = ?"
        )
        self._update(integration_id, sql, (stamp, stamp))

    def mark_synced_many(self, integration_ids: list[str], at: datetime) -> None:
        """``mark_synced`` for several integrations in one transaction (a daily batch: one
        durable commit instead of one each); ids removed meanwhile are skipped."""
        stamp = _iso(at)
        sql = (
            "UPDATE integrations SET status = 'active', last_error = NULL, last_synced_at = "
            "CASE WHEN last_synced_at IS NULL OR last_synced_at < ? THEN ? "
            "ELSE last_synced_at END WHERE id = ?"
        )
        for integration_id in integration_ids:
            _check_id(integration_id)
        self._write(
            lambda conn: conn.executemany(sql, [(stamp, stamp, i) for i in integration_ids])
        )

    def set_organization(self, integration_id: str, organization_id: str | None) -> None:
        sql = "UPDATE integrations SET organization_id = ? WHERE id = ?"
        self._update(integration_id, sql, (_check_org(organization_id),))

    def mark_backfill_requested(self, integration_id: str, days: int) -> None:
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36500:
            raise InvalidInput(f"backfill days must be a whole number >= 0, got {days!r}")
        sql = "UPDATE integrations SET backfilled_days = MAX(backfilled_days, ?) WHERE id = ?"
        self._update(integration_id, sql, (days,))

    def rotate_master_key(self, new_vault: Vault) -> int:
        """Re-encrypt every stored key under ``new_vault``'s current key, all or nothing."""

        def reencrypt(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id, key_token FROM integrations").fetchall()
            for integration_id, token in rows:
                source = new_vault if new_vault.has_key(token_key_id(token)) else self._vault
                plain = source.decrypt(integration_id, token)
                fresh = new_vault.encrypt(integration_id, plain)
                conn.execute(
                    "UPDATE integrations SET key_token = ? WHERE id = ?", (fresh, integration_id)
                )
            channels = conn.execute("SELECT id, secret_token FROM alert_channels").fetchall()
            for channel_id, token in channels:
                owner = f"alert-channel:{channel_id}"
                source = new_vault if new_vault.has_key(token_key_id(token)) else self._vault
                fresh = new_vault.encrypt(owner, source.decrypt(owner, token))
                conn.execute(
                    "UPDATE alert_channels SET secret_token = ? WHERE id = ?", (fresh, channel_id)
                )
            conn.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('master_key_id', ?)",
                (new_vault.key_id,),
            )
            return len(rows)

        count = self._write(reencrypt)
        self._vault = new_vault
        return count

    # --- plumbing ------------------------------------------------------------------------

    def _update(self, integration_id: str, sql: str, params: tuple[Any, ...]) -> None:
        _check_id(integration_id)

        def run(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, (*params, integration_id)).rowcount == 0:
                raise _not_found(integration_id)

        self._write(run)

    def _encrypt_key_id(self, conn: sqlite3.Connection) -> str:
        """The master key new tokens use: the one the registry is pinned to (by rotation).

        A process whose key differs (stale after a rotation, or a different
        GRAFIENT_MASTER_KEY) must not write tokens the other processes cannot read.
        """
        row = conn.execute("SELECT value FROM meta WHERE name = 'master_key_id'").fetchone()
        wanted = row[0] if row else self._vault.key_id
        if not self._vault.has_key(wanted):
            self._reload_vault()
        if not self._vault.has_key(wanted):
            pattern = f"{TOKEN_VERSION}:{wanted}:%"
            sql = (
                "SELECT 1 FROM integrations WHERE key_token LIKE ?1 UNION ALL "
                "SELECT 1 FROM alert_channels WHERE secret_token LIKE ?1 LIMIT 1"
            )
            if conn.execute(sql, (pattern,)).fetchone() is not None:
                raise RegistryError(
                    f"the stored keys use master key {wanted}, which this process has not "
                    "loaded: set GRAFIENT_MASTER_KEY to that key, or restart this process if "
                    "the key was just rotated"
                )
            wanted = self._vault.key_id  # nobody uses the old key any more
        conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('master_key_id', ?)", (wanted,)
        )
        return wanted

    def _reload_vault(self) -> None:
        if self._vault_loader is not None:
            self._vault = self._vault_loader()

    def _prepare_file(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: Exception) -> RegistryError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return RegistryError(
            f"cannot write {self.path}: {reason.lower()}; set GRAFIENT_HOME to a writable folder"
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        with closing(conn):
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            yield conn

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry(fn, write=False)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry(fn, write=True)

    def _retry(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        for attempt in range(LOCK_RETRIES):
            try:
                with self._connect() as conn:
                    return _transaction(conn, fn) if write else fn(conn)
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == LOCK_RETRIES - 1:
                    raise self._translate(exc) from None
            except sqlite3.Error as exc:
                raise self._translate(exc) from None
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    def _translate(self, exc: sqlite3.Error) -> RegistryError:
        text = str(exc).lower()
        if _is_locked(exc):
            return RegistryError(
                f"{self.path} stayed locked by another grafient process; try again shortly"
            )
        if any(s in text for s in ("readonly", "unable to open", "disk i/o", "permission")):
            return self._unwritable(exc)
        if "not a database" in text or "malformed" in text:
            return RegistryError(f"{self.path} is not a readable grafient registry (SQLite) file")
        return RegistryError(f"registry {self.path}: {exc}")


# --- SQL helpers -----------------------------------------------------------------------------


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _stored_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(row[0]) if row else 0


def _enable_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    current = row[0] if row else 0
    if current > len(MIGRATIONS):
        raise RegistryError(
            f"the registry has schema version {current}, newer than this grafient understands "
            f"({len(MIGRATIONS)}); upgrade grafient"
        )
    for steps in MIGRATIONS[current:]:
        for statement in steps:
            conn.execute(statement)
    conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))


def schema_version(path: Path) -> int:
    """The schema version stored in a registry file (0 for a new or empty file)."""
    with closing(sqlite3.connect(path)) as conn:
        return _stored_version(conn)


def stored_key_usage(path: Path) -> dict[str, int]:
    """How many stored API keys each master key id encrypted; empty for a new registry.

    Read before the vault exists (so without a Registry): the vault asks it before creating
    a master key, which is safe only when no stored key needs an old one.
    """
    if not path.exists():
        return {}
    try:
        with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as conn:
            tokens = [row[0] for row in conn.execute("SELECT key_token FROM integrations")]
            if _stored_version(conn) >= CHANNELS_MIGRATION:
                sql = "SELECT secret_token FROM alert_channels"
                tokens += [row[0] for row in conn.execute(sql)]
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return {}
        raise RegistryError(
            f"cannot read {path} to see which master key its stored API keys need: {exc}"
        ) from None
    return dict(Counter(key_id for key_id in map(token_key_id, tokens) if key_id is not None))


def _fetch(conn: sqlite3.Connection, integration_id: str) -> Integration:
    sql = f"SELECT {COLUMNS} FROM integrations WHERE id = ?"
    row = conn.execute(sql, (integration_id,)).fetchone()
    if row is None:
        raise _not_found(integration_id)
    return _to_integration(row)


def _token(conn: sqlite3.Connection, integration_id: str) -> str:
    sql = "SELECT key_token FROM integrations WHERE id = ?"
    row = conn.execute(sql, (integration_id,)).fetchone()
    if row is None:
        raise _not_found(integration_id)
    return str(row[0])


def _to_integration(row: tuple[Any, ...]) -> Integration:
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


def _refuse_duplicate(conn: sqlite3.Connection, label: str) -> None:
    sql = "SELECT id, label FROM integrations WHERE label_key = ?"
    row = conn.execute(sql, (_label_key(label),)).fetchone()
    if row is not None:
        raise DuplicateLabel(
            f"an integration labelled {row[1]!r} already exists (id {row[0]}); choose another label"
        )


def _refuse_same_organization(
    conn: sqlite3.Connection, provider: str, organization_id: str | None
) -> None:
    if organization_id is None:
        return
    sql = "SELECT id, label FROM integrations WHERE provider = ? AND organization_id = ?"
    row = conn.execute(sql, (provider, organization_id)).fetchone()
    if row is not None:
        raise DuplicateOrganization(
            f"organization {organization_id} is already connected as {row[1]!r} (id {row[0]}); "
            "a second integration would count its spend twice: to use a new key for it, run "
            f"`grafient integrations set-key {row[0]}`"
        )


def _free_id(conn: sqlite3.Connection, base: str) -> str:
    taken = {
        r[0] for r in conn.execute("SELECT id FROM integrations UNION SELECT id FROM retired_ids")
    }
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _generated_label(conn: sqlite3.Connection, organization_id: str | None) -> str:
    taken = {r[0] for r in conn.execute("SELECT label_key FROM integrations")}
    if organization_id and _label_key(organization_id) not in taken:
        return organization_id
    n = len(taken) + 1
    while _label_key(f"OpenAI organization {n}") in taken:
        n += 1
    return f"OpenAI organization {n}"


# --- validation ------------------------------------------------------------------------------


def slugify(label: str) -> str:
    """An id from a label: [a-z0-9-], dashes collapsed, at most 48 characters, else "openai"."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-") or PROVIDER


def key_hint(api_key: str) -> str:
    """A recognizable, harmless hint: known prefix + last 4 characters (none for short keys)."""
    prefix = next((p for p in ("sk-admin-", "sk-") if api_key.startswith(p)), "")
    tail = api_key[-4:] if len(api_key) >= len(prefix) + 12 else ""
    return f"{prefix}...{tail}"


def _label_key(label: str) -> str:
    return unicodedata.normalize("NFC", label).casefold()


def _check_label(label: str | None) -> str:
    label = (label or "").strip()
    if any(unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in label):
        raise InvalidInput("the label contains control characters; use plain text")
    if len(label) > MAX_LABEL:
        raise InvalidInput(f"the label is {len(label)} characters long; the limit is {MAX_LABEL}")
    return label


def _check_plan(plan: str) -> str:
    name = plan.strip().lower() if isinstance(plan, str) else ""
    if name not in PLANS:
        raise InvalidInput(f"unknown plan {plan!r}: choose one of {', '.join(PLANS)}")
    return name


def _check_api_key(api_key: str) -> str:
    secret = api_key.strip() if isinstance(api_key, str) else ""
    if not secret:
        raise InvalidInput(
            "the API key is empty; paste the organization's admin key (sk-admin-...)"
        )
    if any(ch.isspace() or unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in secret):
        raise InvalidInput(
            "the API key contains spaces or control characters; paste it again on one line"
        )
    return secret


def _check_org(organization_id: str | None) -> str | None:
    org = (organization_id or "").strip()
    if any(ch.isspace() or unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in org):
        raise InvalidInput("the organization id contains spaces or control characters")
    if len(org) > 128:
        raise InvalidInput("the organization id is longer than 128 characters")
    return org or None


def _check_id(integration_id: str) -> None:
    if not isinstance(integration_id, str) or not ID_PATTERN.fullmatch(integration_id):
        raise IntegrationNotFound(
            "not an integration id: ids are lowercase letters, digits and dashes "
            "(up to 64); see `grafient integrations list`"
        )


def _not_found(integration_id: str) -> IntegrationNotFound:
    return IntegrationNotFound(
        f"no integration with id {integration_id!r}; see `grafient integrations list`"
    )


def _clean_error(error: str | None) -> str | None:
    """Error text for last_error: anything shaped like an OpenAI key is redacted."""
    if error is None:
        return None
    return scrub(str(error))[:MAX_ERROR]


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
