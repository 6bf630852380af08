"""Settings read from the environment (see DESIGN.md, "Settings")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HOME_FOLDER = ".grafient"
DEFAULT_RESYNC_DAYS = 3
DEFAULT_SYNC_BATCH = 50  # a run costs seconds of its own (process, Dagster); see issue 18
DAGSTER_POSTGRES_URL = "GRAFIENT_DAGSTER_POSTGRES_URL"
WAREHOUSE_DATA_PATH = "GRAFIENT_WAREHOUSE_DATA_PATH"
LAKE_PREFIX = "ducklake:"  # GRAFIENT_WAREHOUSE=ducklake:<PostgreSQL catalog>: see lake.py
REGISTRY_URL = "GRAFIENT_REGISTRY_URL"
# dagster-postgres 0.29 speaks psycopg2; with SQLAlchemy 2.1 a bare `postgresql://` URL selects
# psycopg 3, which fails on its queries (`syntax error at or near "$1"`): name the driver.
POSTGRES_DRIVER_SCHEME = "postgresql+psycopg2"
_POSTGRES_SCHEMES = ("postgres", "postgresql", POSTGRES_DRIVER_SCHEME)


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: str = field(repr=False)  # a DuckLake catalog URL may hold a password
    resync_days: int
    master_key_b64: str | None = field(repr=False)
    sync_batch: int = DEFAULT_SYNC_BATCH
    home_source: str = "GRAFIENT_HOME"  # how the home was found, for people
    # Dagster's runs, events and schedules in PostgreSQL instead of SQLite files (issue 19)
    dagster_postgres_url: str | None = field(default=None, repr=False)
    # GRAFIENT_WAREHOUSE=ducklake:<catalog>: where a new lake keeps its Parquet files (issue 19)
    warehouse_data_path: str | None = None
    # The registry in PostgreSQL (or another SQLite file); None: registry.db in the home.
    # Not in repr: the URL holds the database password.
    registry_url: str | None = field(default=None, repr=False)

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def registry_target(self) -> Path | str:
        """Where the registry is: GRAFIENT_REGISTRY_URL (it may hold a password), else the
        home's registry.db."""
        return self.registry_url or self.registry_path

    @property
    def master_key_path(self) -> Path:
        return self.home / "master.key"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def lake_data_path(self) -> str:
        """The data path given, else `$GRAFIENT_HOME/lake/` (used when the lake is created)."""
        return self.warehouse_data_path or f"{self.home / 'lake'}/"

    @property
    def warehouse_label(self) -> str:
        """The warehouse for messages: a lake's catalog without its password."""
        if not self.warehouse.startswith(LAKE_PREFIX):
            return self.warehouse
        from grafient_pipeline.lake import parse_catalog

        return f"the DuckLake catalog at {parse_catalog(self.warehouse).describe()}"

    @property
    def snapshot_path(self) -> Path:
        """The read-only copy of the marts the dashboard reads (grafient_pipeline.snapshot)."""
        return self.home / "snapshot.duckdb"


def find_home(env: Mapping[str, str], cwd: Path | None = None) -> tuple[Path, str]:
    """The home and how it was found: GRAFIENT_HOME; else the nearest `.grafient` home in the
    current folder or above (as git finds `.git`); else the per-user `~/.grafient`."""
    if env.get("GRAFIENT_HOME"):
        return Path(env["GRAFIENT_HOME"]).expanduser().absolute(), "GRAFIENT_HOME"
    here = (cwd or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / HOME_FOLDER
        if _is_home(candidate) and candidate != _user_home(env):
            return candidate, f"found in {folder}"
    return _user_home(env), "the per-user default"


def _is_home(folder: Path) -> bool:
    return (folder / "registry.db").is_file() or (folder / "dagster_home").is_dir()


def _user_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home()).expanduser().absolute() / HOME_FOLDER


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home, home_source = find_home(env)
    warehouse = env.get("GRAFIENT_WAREHOUSE") or str(home / "warehouse.duckdb")
    resync_days = _whole_number(env, "GRAFIENT_RESYNC_DAYS", DEFAULT_RESYNC_DAYS, 180, "days")
    sync_batch = _whole_number(env, "GRAFIENT_SYNC_BATCH", DEFAULT_SYNC_BATCH, 500, "integrations")
    return Settings(
        home=home,
        warehouse=warehouse,
        resync_days=resync_days,
        master_key_b64=env.get("GRAFIENT_MASTER_KEY") or None,
        sync_batch=sync_batch,
        home_source=home_source,
        dagster_postgres_url=postgres_url(env, DAGSTER_POSTGRES_URL),
        warehouse_data_path=(env.get(WAREHOUSE_DATA_PATH) or "").strip() or None,
        registry_url=registry_url(env),
    )


def registry_url(env: Mapping[str, str]) -> str | None:
    """GRAFIENT_REGISTRY_URL: a PostgreSQL URL (driver named as for Dagster's) or a
    sqlite:///PATH one; None when unset."""
    raw = (env.get(REGISTRY_URL) or "").strip()
    if raw.startswith("sqlite:///") and len(raw) > len("sqlite:///"):
        return raw
    if urlsplit(raw).scheme == "sqlite":
        raise SettingsError(f"{REGISTRY_URL} wants a file: sqlite:////ABSOLUTE/PATH/registry.db")
    return postgres_url(env, REGISTRY_URL)


def postgres_url(env: Mapping[str, str], name: str) -> str | None:
    """The PostgreSQL URL in `name`, with the driver dagster-postgres needs; None when unset.
    Errors never repeat the URL: it holds the password."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in _POSTGRES_SCHEMES:
        raise SettingsError(
            f"{name} must be a PostgreSQL URL such as "
            f"postgresql://USER:PASSWORD@HOST:5432/DATABASE (got a {parts.scheme or 'bare'!r} one)"
        )
    return urlunsplit(parts._replace(scheme=POSTGRES_DRIVER_SCHEME))


def redacted_url(url: str) -> str:
    """`url` with its password replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _whole_number(env: Mapping[str, str], name: str, default: int, most: int, unit: str) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise SettingsError(
            f"{name} must be a whole number of {unit} from 1 to {most}, got {raw!r}"
        )
    return value
