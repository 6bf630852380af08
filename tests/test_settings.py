"""Settings from the environment: defaults, and one clear error for a bad value."""

from __future__ import annotations

import pytest

from grafient_pipeline.settings import SettingsError, load_settings


def test_defaults(tmp_path) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path)})
    assert (settings.resync_days, settings.sync_batch) == (3, 20)


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
