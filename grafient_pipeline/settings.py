"""Settings read from the environment (see DESIGN.md, "Settings")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HOME_FOLDER = ".grafient"
DEFAULT_RESYNC_DAYS = 3
DEFAULT_SYNC_BATCH = 50  # a run costs seconds of its own (process, Dagster); see issue 18
DAGSTER_POSTGRES_URL = "GRAFIENT_DAGSTER_POSTGRES_URL"
# dagster-postgres 0.29 speaks psycopg2; with SQLAlchemy 2.1 a bare `postgresql://` URL selects
# psycopg 3, which fails on its queries (`syntax error at or near "$1"`): name the driver.
POSTGRES_DRIVER_SCHEME = "postgresql+psycopg2"
_POSTGRES_SCHEMES = ("postgres", "postgresql", POSTGRES_DRIVER_SCHEME)


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    warehouse: str
    resync_days: int
    master_key_b64: str | None
    sync_batch: int = DEFAULT_SYNC_BATCH
    home_source: str = "GRAFIENT_HOME"  # how the home was found, for people
    # Dagster's runs, events and schedules in PostgreSQL instead of SQLite files (issue 19)
    dagster_postgres_url: str | None = None

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

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
    )


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
