"""Settings from the environment: defaults, and one clear error for a bad value."""

from __future__ import annotations

import pytest

from grafient_pipeline.settings import SettingsError, load_settings, redacted_url


def test_defaults(tmp_path) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    assert (settings.resync_days, settings.sync_batch) == (3, 50)


def test_sync_batch_is_read(tmp_path) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_SYNC_BATCH": "1"})
    assert settings.sync_batch == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRAFIENT_SYNC_BATCH", "0"),
        ("GRAFIENT_SYNC_BATCH", "ten"),
        ("GRAFIENT_SYNC_BATCH", "501"),
        ("GRAFIENT_RESYNC_DAYS", "181"),
        ("GRAFIENT_RESYNC_DAYS", "-1"),
    ],
)
def test_a_bad_number_names_the_variable_and_the_range(tmp_path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"GRAFIENT_HOME": str(tmp_path), name: value})
    message = str(raised.value)
    assert message.startswith(f"{name} must be a whole number of ")
    assert repr(value) in message and "\n" not in message


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://user:secret@db:5432/dagster",
        "postgres://user:secret@db:5432/dagster",
        "postgresql+psycopg2://user:secret@db:5432/dagster",
    ],
)
def test_the_dagster_postgres_url_names_the_driver_dagster_postgres_needs(tmp_path, given) -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which dagster-postgres 0.29
    cannot use."""
    env = {"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_DAGSTER_POSTGRES_URL": given}
    url = load_settings(env).dagster_postgres_url
    assert url == "postgresql+psycopg2://user:secret@db:5432/dagster"


def test_without_a_dagster_postgres_url_dagster_stays_on_sqlite(tmp_path) -> None:
    assert load_settings({"GRAFIENT_HOME": str(tmp_path)}).dagster_postgres_url is None


def test_a_url_of_another_database_is_refused_without_repeating_it(tmp_path) -> None:
    env = {
        "GRAFIENT_HOME": str(tmp_path),
        "GRAFIENT_DAGSTER_POSTGRES_URL": "mysql://user:secret@db/dagster",
    }
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert message.startswith("GRAFIENT_DAGSTER_POSTGRES_URL must be a PostgreSQL URL")
    assert "secret" not in message and "\n" not in message


def test_a_redacted_url_keeps_everything_but_the_password() -> None:
    url = "postgresql+psycopg2://grafient:s3cr%40t@db.example:5432/dagster?sslmode=require"
    assert redacted_url(url) == (
        "postgresql+psycopg2://grafient:***@db.example:5432/dagster?sslmode=require"
    )
    assert redacted_url("postgresql://db/dagster") == "postgresql://db/dagster"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:pw@db:5432/grafient", "postgresql+psycopg2://u:pw@db:5432/grafient"),
        ("postgresql://u:pw@db/grafient", "postgresql+psycopg2://u:pw@db/grafient"),
        ("sqlite:////srv/grafient/registry.db", "sqlite:////srv/grafient/registry.db"),
    ],
)
def test_the_registry_url_names_its_driver(tmp_path, given, expected) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_REGISTRY_URL": given})
    assert settings.registry_url == settings.registry_target == expected


def test_without_a_registry_url_the_registry_is_the_homes_file(tmp_path) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    assert settings.registry_url is None
    assert settings.registry_target == tmp_path / "registry.db"


@pytest.mark.parametrize("given", ["mysql://u:hunter2@db/x", "sqlite://", "u:hunter2@db"])
def test_a_registry_url_we_cannot_use_is_refused_without_repeating_it(tmp_path, given) -> None:
    env = {"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_REGISTRY_URL": given}
    with pytest.raises(SettingsError, match=r"^GRAFIENT_REGISTRY_URL") as raised:
        load_settings(env)
    assert "hunter2" not in str(raised.value) and "\n" not in str(raised.value)


def test_no_secret_setting_reaches_the_settings_repr(tmp_path) -> None:
    env = {
        "GRAFIENT_HOME": str(tmp_path),
        "GRAFIENT_REGISTRY_URL": "postgresql://grafient:hunter2@db/grafient",
        "GRAFIENT_DAGSTER_POSTGRES_URL": "postgresql://dagster:swordfish@db/dagster",
        "GRAFIENT_WAREHOUSE": "ducklake:postgresql://lake:opensesame@db/lake",
        "GRAFIENT_MASTER_KEY": "bWFzdGVyLWtleS1ieXRlcy1tYXN0ZXIta2V5LWJ5dGVzMDE=",
    }
    shown = repr(load_settings(env))
    for secret in ("hunter2", "swordfish", "opensesame", env["GRAFIENT_MASTER_KEY"]):
        assert secret not in shown
