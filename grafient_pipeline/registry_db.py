"""The registry's database: a SQLite file (the default) or PostgreSQL (GRAFIENT_REGISTRY_URL),
through SQLAlchemy Core, so one code path and one set of SQL statements serve both.

Writes run one at a time, as SQLite runs them: ``BEGIN IMMEDIATE`` there; on PostgreSQL every
write transaction first takes one transaction-scoped advisory lock. So each check-then-write
(a duplicate label or organization, the next free id, the pinned master key, a budget's or a
channel's name, a master-key rotation) sees every earlier write, under READ COMMITTED, with no
unique index to add to existing files (an organization may be NULL, and SQLite files must keep
their schema) and no serialization failures to retry. Registry writes are few and short; reads
never wait for them.

The URL may hold a password: messages show `Location.shown` (password masked), and a driver's
error becomes one line without it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from grafient_pipeline.settings import POSTGRES_DRIVER_SCHEME, REGISTRY_URL, redacted_url

T = TypeVar("T")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
WRITE_LOCK = 0x6772_6166_7265_6721  # the registry's one advisory lock ("grafreg!")
CONNECT_TIMEOUT_S = 10
# serialization failure, deadlock, lock_timeout: another writer held on; try again
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
_BEGIN = "grafient_begin"  # execution option: the statement that opens a SQLite transaction
DATABASE_ERRORS = (SQLAlchemyError, sqlite3.Error)


class RegistryError(Exception):
    """A registry problem; the message is one line a user can act on."""


@dataclass(frozen=True)
class Location:
    url: str = field(repr=False)  # may hold a password: never in a message
    path: Path | None  # the SQLite file; None for PostgreSQL
    shown: str  # for messages: the path, or the URL with its password masked

    @property
    def dialect(self) -> str:
        return SQLITE if self.path is not None else POSTGRESQL


def locate(target: Path | str) -> Location:
    """A registry file path, a sqlite:///PATH URL or a PostgreSQL URL."""
    raw = str(target)
    if "://" not in raw:
        path = Path(target)
        return Location(f"sqlite:///{path}", path, str(path))
    scheme, _, rest = raw.partition("://")
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return locate(Path(rest[1:]))
    if scheme not in ("postgres", "postgresql", POSTGRES_DRIVER_SCHEME):
        raise RegistryError(
            f"{REGISTRY_URL} must be postgresql://USER:PASSWORD@HOST:5432/DATABASE or "
            f"sqlite:////PATH/registry.db (got a {scheme!r} URL)"
        )
    url = f"{POSTGRES_DRIVER_SCHEME}://{rest}"
    return Location(url, None, redacted_url(url))


# One engine per database and process: the dashboard opens the registry on every request.
_engines: dict[str, Engine] = {}
_engines_pid = os.getpid()
_engines_lock = threading.Lock()


def _engine(location: Location) -> Engine:
    global _engines_pid
    with _engines_lock:
        if _engines_pid != os.getpid():  # a forked child: the parent's connections stay its own
            for inherited in _engines.values():
                inherited.dispose(close=False)
            _engines.clear()
            _engines_pid = os.getpid()
        engine = _engines.get(location.url)
        if engine is None:
            engine = _engines[location.url] = _new_engine(location)
        return engine


def _new_engine(location: Location) -> Engine:
    if location.path is not None:
        path = str(location.path)
        # A creator, not a URL: a path needs no escaping. Legacy isolation_level=None: the
        # `begin` listener opens transactions itself (SQLAlchemy's recipe for pysqlite).
        engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(path, isolation_level=None),
            poolclass=NullPool,  # a connection per operation, as processes come and go
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(
            location.url,
            pool_size=2,
            max_overflow=6,
            pool_pre_ping=True,
            pool_recycle=600,
            hide_parameters=True,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "application_name": "grafient-registry",
            },
        )
    except ImportError:
        raise RegistryError(
            f"{REGISTRY_URL} needs psycopg2: pip install 'grafient-pipeline[postgres]'"
        ) from None
    except (SQLAlchemyError, ValueError):
        raise RegistryError(
            f"{REGISTRY_URL} is not a usable PostgreSQL URL ({location.shown}); write it as "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous = FULL")
    dbapi_connection.execute("PRAGMA secure_delete = ON")


def _sqlite_begin(conn: Connection) -> None:
    begin = conn.get_execution_options().get(_BEGIN)
    if begin:  # reads run without a transaction, as they did before SQLAlchemy
        conn.exec_driver_sql(begin)


class Database:
    """Connections and transactions on one registry database; one attempt per call (the
    caller retries while `is_busy`)."""

    def __init__(self, location: Location) -> None:
        self.location = location

    @property
    def dialect(self) -> str:
        return self.location.dialect

    def read(self, fn: Callable[[Connection], T], busy_timeout_s: float) -> T:
        with self._connect(busy_timeout_s) as conn:
            return fn(conn)

    def write(self, fn: Callable[[Connection], T], busy_timeout_s: float) -> T:
        """`fn` in one transaction, alone among the registry's writers."""
        with self._connect(busy_timeout_s) as conn:
            if self.dialect == SQLITE:
                conn.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"})
            with conn.begin():
                if self.dialect == POSTGRESQL:
                    timeout = f"{max(1, int(busy_timeout_s * 1000))}ms"
                    conn.execute(
                        text("SELECT set_config('lock_timeout', :t, true)"), {"t": timeout}
                    )
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                return fn(conn)

    @contextmanager
    def _connect(self, busy_timeout_s: float) -> Iterator[Connection]:
        with _engine(self.location).connect() as conn:
            if self.dialect == SQLITE:
                busy_ms = int(busy_timeout_s * 1000)
                conn.connection.driver_connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            yield conn

    # --- errors ------------------------------------------------------------------------------

    def is_busy(self, exc: BaseException) -> bool:
        """True when another writer held the database: the operation may be tried again."""
        original = _original(exc)
        code = getattr(original, "pgcode", None)
        if code is not None:
            return code in RETRYABLE_SQLSTATES
        message = str(original).lower()
        return self.dialect == SQLITE and ("locked" in message or "busy" in message)

    def reason(self, exc: BaseException) -> str:
        """The driver's message: its first line, without the URL's password."""
        original = _original(exc)
        lines = [line.strip() for line in str(original).splitlines() if line.strip()]
        line = lines[0] if lines else type(original).__name__
        password = urlsplit(self.location.url).password
        for secret in {password, unquote(password or "")} - {None, ""}:
            line = line.replace(str(secret), "***")
        return line

    def unwritable(self, reason: str) -> RegistryError:
        return RegistryError(
            f"cannot write {self.location.shown}: {reason.lower()}; "
            "set GRAFIENT_HOME to a writable folder"
        )

    def translate(self, exc: BaseException) -> RegistryError:
        """One line a user can act on, for a database error."""
        reason = self.reason(exc)
        lowered = reason.lower()
        shown = self.location.shown
        if self.is_busy(exc):
            return RegistryError(
                f"{shown} stayed locked by another grafient process; try again shortly"
            )
        if self.dialect == SQLITE:
            if any(s in lowered for s in ("readonly", "unable to open", "disk i/o", "permission")):
                return self.unwritable(reason)
            if "not a database" in lowered or "malformed" in lowered:
                return RegistryError(f"{shown} is not a readable grafient registry (SQLite) file")
        elif _is_connection_failure(exc):
            return RegistryError(
                f"cannot connect to the registry database {shown}: {reason}; check "
                f"{REGISTRY_URL} and that the server is running"
            )
        return RegistryError(f"registry {shown}: {reason}")


def _original(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def _is_connection_failure(exc: BaseException) -> bool:
    code = getattr(_original(exc), "pgcode", None)
    if code is None:
        return isinstance(exc, OperationalError)
    return code.startswith(("08", "28", "3D"))  # connection, authorization, unknown database
