"""Settings read from the environment (see DESIGN.md, "Settings")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_RESYNC_DAYS = 3


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    openai_base_url: str
    warehouse: str
    resync_days: int
    master_key_b64: str | None

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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("GRAFIENT_HOME") or "./.grafient").expanduser().absolute()
    warehouse = env.get("GRAFIENT_WAREHOUSE") or str(home / "warehouse.duckdb")
    raw_days = env.get("GRAFIENT_RESYNC_DAYS") or str(DEFAULT_RESYNC_DAYS)
    try:
        resync_days = int(raw_days)
    except ValueError:
        resync_days = 0
    if not 1 <= resync_days <= 180:
        raise SettingsError(
            f"GRAFIENT_RESYNC_DAYS must be a whole number of days from 1 to 180, got {raw_days!r}"
        )
    return Settings(
        home=home,
        openai_base_url=(env.get("GRAFIENT_OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL).rstrip(
            "/"
        ),
        warehouse=warehouse,
        resync_days=resync_days,
        master_key_b64=env.get("GRAFIENT_MASTER_KEY") or None,
    )
