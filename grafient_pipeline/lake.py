"""DuckLake: the warehouse's tables as Parquet files under a shared data path with the catalog in
PostgreSQL, so runs on several machines can write at once (`GRAFIENT_WAREHOUSE=ducklake:...`).

DuckDB's extension repository may be out of reach, so the ducklake and postgres extensions come
from their PyPI packages (the `ducklake` extra: duckdb 1.5.5 and the matching packages) and are
LOADed from their installed path. The postgres package's file only loads under DuckDB's internal
name `postgres_scanner`, so a link of that name is kept in a private folder.

The catalog's password goes into a temporary DuckDB secret, never into the ATTACH string: DuckDB
repeats that string in its errors and in `duckdb_databases()`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import duckdb

from grafient_pipeline.settings import LAKE_PREFIX, SettingsError

LAKE_NAME = "lake"
SECRET_NAME = "grafient_lake_catalog"
EXTRA_HINT = "pip install 'grafient-pipeline[ducklake]' (duckdb 1.5.5 and its DuckLake extensions)"
_URL_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")
_CONNINFO_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


class LakeError(SettingsError):
    """The lake cannot be opened (the message says what to do; it never holds the password)."""


@dataclass(frozen=True)
class Catalog:
    """The PostgreSQL catalog as libpq key=value pairs, the password kept apart."""

    conninfo: str
    password: str | None

    def describe(self) -> str:
        """host:port/database, for messages."""
        pairs = dict(_conninfo_pairs(self.conninfo))
        where = f"{pairs.get('host', 'localhost')}:{pairs.get('port', '5432')}"
        return f"{where}/{pairs.get('dbname', '')}"

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def is_lake(database: str) -> bool:
    return database.startswith(LAKE_PREFIX)


def parse_catalog(database: str) -> Catalog:
    """`ducklake:` then a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=...)
    or a libpq conninfo (`dbname=DB host=HOST ...`, also as DuckLake writes it: `postgres:...`)."""
    catalog = database.removeprefix(LAKE_PREFIX).strip()
    if catalog.startswith("postgres:") and not catalog.startswith("postgres://"):
        catalog = catalog.removeprefix("postgres:")
    if "://" in catalog:
        return _from_url(catalog)
    pairs = _conninfo_pairs(catalog)
    if not pairs:
        raise LakeError(
            "GRAFIENT_WAREHOUSE=ducklake: needs a PostgreSQL catalog, e.g. "
            "ducklake:postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    password = next((value for key, value in pairs if key == "password"), None)
    return Catalog(_conninfo([(k, v) for k, v in pairs if k != "password"]), password)


def _from_url(url: str) -> Catalog:
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        raise LakeError(
            "GRAFIENT_WAREHOUSE=ducklake: takes a PostgreSQL catalog such as "
            f"ducklake:postgresql://USER:PASSWORD@HOST:5432/DATABASE (got a {parts.scheme!r} URL)"
        )
    pairs = [
        ("host", parts.hostname),
        ("port", str(parts.port) if parts.port else None),
        ("user", unquote(parts.username) if parts.username else None),
        ("dbname", unquote(parts.path.lstrip("/")) or None),
        *parse_qsl(parts.query),
    ]
    password = unquote(parts.password) if parts.password is not None else None
    return Catalog(_conninfo([(k, v) for k, v in pairs if v]), password)


def _conninfo_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for key, value in _CONNINFO_PAIR.findall(text):
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((key, value))
    return pairs


def _conninfo(pairs: list[tuple[str, str]]) -> str:
    def quoted(value: str) -> str:
        if value and not re.search(r"[\s'\\]", value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quoted(value)}" for key, value in pairs)


def extension_file(package: str, stem: str) -> Path:
    """An extension's file in its PyPI package, for the running duckdb's version."""
    spec = importlib.util.find_spec(package)
    version = duckdb.__version__
    if spec is None or not spec.submodule_search_locations:
        raise LakeError(f"DuckLake needs the {package} package: {EXTRA_HINT}")
    path = Path(spec.submodule_search_locations[0], "extensions", f"v{version}")
    path = path / f"{stem}.duckdb_extension"
    if not path.is_file():
        raise LakeError(f"DuckLake has no {stem} extension for duckdb {version} here: {EXTRA_HINT}")
    return path


def check_extensions() -> None:
    """Raise LakeError unless both extensions exist for the running duckdb (an install check)."""
    extension_file("duckdb_extension_ducklake", "ducklake")
    extension_file("duckdb_extension_postgres", "postgres")


def _postgres_extension(folder: Path) -> Path:
    """The postgres extension under the only name it loads by (a link, replaced atomically)."""
    target = extension_file("duckdb_extension_postgres", "postgres")
    folder = folder / f"v{duckdb.__version__}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    link = folder / "postgres_scanner.duckdb_extension"
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        temp = folder / f".postgres_scanner.{os.getpid()}.link"
        temp.unlink(missing_ok=True)
        temp.symlink_to(target)
        os.replace(temp, link)
    return link


# The connections open_lake attached a lake to (and USE'd): asked before every model run, so
# answered without a query.
_LAKE_CONNECTIONS: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def is_lake_connection(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection was opened on a DuckLake (by ``open_lake``)."""
    return conn in _LAKE_CONNECTIONS


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def open_lake(
    database: str,
    *,
    data_path: str,
    data_path_given: bool,
    extension_dir: Path,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as `lake` and USE'd.

    The data path is stored in the catalog when the lake is created: a lake that exists is
    attached without one (every machine finds the files where the catalog says), unless
    `data_path_given` (then DuckLake refuses a path that differs from the catalog's)."""
    catalog = parse_catalog(database)
    ducklake = extension_file("duckdb_extension_ducklake", "ducklake")
    postgres = _postgres_extension(extension_dir)
    conn = duckdb.connect(":memory:")
    try:
        conn.execute(f"LOAD {_sql_text(str(ducklake))}")
        conn.execute(f"LOAD {_sql_text(str(postgres))}")
        options = []
        if catalog.password is not None:
            conn.execute(
                f"CREATE OR REPLACE TEMPORARY SECRET {SECRET_NAME} (TYPE postgres, PASSWORD $p)",
                {"p": catalog.password},
            )
            options.append(f"METADATA_PARAMETERS MAP {{'SECRET': '{SECRET_NAME}'}}")
        if read_only:
            options.append("READ_ONLY")
        _attach(conn, catalog, options, data_path, data_path_given)
        conn.execute(f"USE {LAKE_NAME}")
    except BaseException:
        conn.close()
        raise
    _LAKE_CONNECTIONS.add(conn)
    return conn


def _attach(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    options: list[str],
    data_path: str,
    data_path_given: bool,
) -> None:
    source = _sql_text(f"ducklake:postgres:{catalog.conninfo}")
    with_path = [*options, f"DATA_PATH {_sql_text(data_path)}"]
    tries = [with_path] if data_path_given else [options, with_path]
    for attempt, chosen in enumerate(tries, start=1):
        suffix = f" ({', '.join(chosen)})" if chosen else ""
        try:
            conn.execute(f"ATTACH {source} AS {LAKE_NAME}{suffix}")
            return
        except duckdb.Error as error:
            text = catalog.scrub(str(error))
            if attempt < len(tries) and "data_path is not set" in text.lower():
                continue  # a new lake: created with the default data path
            raise LakeError(_attach_failure(catalog, text)) from None


def _attach_failure(catalog: Catalog, text: str) -> str:
    if "does not match existing data path" in text:
        found = re.search(r'existing data path in the catalog "([^"]*)"', text)
        stored = found.group(1) if found else "another path"
        return (
            f"the lake at {catalog.describe()} keeps its files in {stored}: set "
            f"GRAFIENT_WAREHOUSE_DATA_PATH to it (or unset it)"
        )
    reason = text.split("failed:", 1)[-1] if "failed:" in text else text
    reason = re.sub(r"\s+", " ", reason).strip()
    return (
        f"the DuckLake catalog at {catalog.describe()} cannot be opened ({reason}): check "
        "GRAFIENT_WAREHOUSE and that PostgreSQL runs"
    )


def is_conflict(error: BaseException) -> bool:
    """A DuckLake commit lost to another writer's (it can be retried from the start)."""
    return isinstance(error, duckdb.TransactionException) and "conflict" in str(error).lower()
