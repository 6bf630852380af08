"""Registry: integrations in SQLite, shared by many processes, keys encrypted by the vault.

The concurrency and rotation cases run on PostgreSQL too (GRAFIENT_REGISTRY_URL, a real server:
tests/postgres.py); tests/test_registry_postgres.py has the rest of the PostgreSQL cases."""

from __future__ import annotations

import multiprocessing
import os
import re
import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from grafient_pipeline import registry as registry_module
from grafient_pipeline.registry import (
    MIGRATIONS,
    DuplicateLabel,
    DuplicateOrganization,
    IntegrationNotFound,
    InvalidInput,
    Registry,
    RegistryError,
    key_hint,
    schema_version,
    slugify,
)
from grafient_pipeline.settings import load_settings
from grafient_pipeline.vault import (
    DecryptionError,
    MasterKeyMismatchError,
    Vault,
    generate_master_key,
    rotate_master_key_file,
)

SECRET = "sk-admin-Zq9TOPSECRETvalue0123456789abcdXYZ7"


@pytest.fixture
def vault() -> Vault:
    return Vault([generate_master_key()])


@pytest.fixture
def registry(tmp_path: Path, vault: Vault) -> Registry:
    return Registry(tmp_path / "home" / "registry.db", vault)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a registry lives: a SQLite file, or a fresh PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        return str(tmp_path / "home" / "registry.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def shared_registry(target: str, vault: Vault) -> Registry:
    return Registry(target, vault)


def _env(home: str, target: str) -> dict[str, str]:
    """The environment of a home whose registry is `target` (its own file, or PostgreSQL)."""
    env = {"GRAFIENT_HOME": home}
    if "://" in target:
        env["GRAFIENT_REGISTRY_URL"] = target
    return env


def _execute(registry: Registry, sql: str) -> None:
    """Raw SQL on the registry's database, as someone with a database client would run it."""
    registry.write(lambda conn: conn.execute(text(sql)))


def test_add_get_list(registry: Registry) -> None:
    added = registry.add("Acme Corp", "pro", SECRET, organization_id="org-123")
    assert added.id == "acme-corp"
    assert (added.status, added.plan, added.provider) == ("backfilling", "pro", "openai")
    assert added.organization_id == "org-123"
    assert added.key_hint == "sk-admin-...XYZ7"
    assert added.backfilled_days == 0 and added.last_synced_at is None
    assert added.created_at.tzinfo is not None
    assert registry.get("acme-corp") == added
    second = registry.add("Beta", "FREE", SECRET + "2")
    assert second.plan == "free"
    assert [i.id for i in registry.list()] == ["acme-corp", "beta"]
    assert registry.api_key("acme-corp") == SECRET


def test_public_dict_has_no_secret(registry: Registry) -> None:
    registry.add("Acme", "pro", SECRET)
    registry.mark_synced("acme", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    public = registry.get("acme").public_dict()
    assert set(public) == {
        "id", "label", "provider", "plan", "status", "organization_id",
        "last_synced_at", "last_error", "key_hint",
    }  # fmt: skip
    assert public["last_synced_at"] == "2025-01-02T03:04:05+00:00"
    assert SECRET not in repr(public) and SECRET not in repr(registry.get("acme"))


def test_ids_are_slugs_and_unique(registry: Registry) -> None:
    assert slugify("  Ünïcode  Org!! ") == "unicode-org"
    assert slugify("日本語") == "openai"
    assert slugify("a" * 60) == "a" * 48
    assert slugify("a" * 47 + " b") == "a" * 47
    assert registry.add("Acme", "pro", SECRET).id == "acme"
    assert registry.add("ACME!", "pro", SECRET).id == "acme-2"
    assert registry.add("acme?", "pro", SECRET).id == "acme-3"
    assert registry.add("日本", "pro", SECRET).id == "openai"


def test_duplicate_label_case_insensitive(registry: Registry) -> None:
    registry.add("Acme", "pro", SECRET)
    with pytest.raises(DuplicateLabel, match="'Acme' already exists"):
        registry.add("  aCME ", "free", SECRET)


def test_blank_label_is_generated(registry: Registry) -> None:
    assert registry.add("", "free", SECRET).label == "OpenAI organization 1"
    assert registry.add("  ", "free", SECRET).label == "OpenAI organization 2"
    with_org = registry.add("", "free", SECRET, organization_id="org-abc")
    assert (with_org.label, with_org.id) == ("org-abc", "org-abc")
    assert registry.add("", "free", SECRET, organization_id="org-def").label == "org-def"


def test_an_organization_is_connected_once(registry: Registry) -> None:
    first = registry.add("Acme", "pro", SECRET, organization_id="org-acme")
    with pytest.raises(DuplicateOrganization) as refused:
        registry.add("Acme again", "free", SECRET, organization_id="org-acme")
    assert first.id in str(refused.value) and "set-key" in str(refused.value)
    assert [i.id for i in registry.list()] == [first.id]


@pytest.mark.parametrize(
    "label",
    [
        "'; DROP TABLE integrations; --",
        'Robert"); DELETE FROM integrations; --',
        "O'Brien & Co. \\ % _ *",
        "Café ☕ 日本語 🚀 ‮rtl",
        "x" * 100,
    ],
)
def test_hostile_labels_stored_verbatim(registry: Registry, label: str) -> None:
    added = registry.add(label, "pro", SECRET)
    assert registry.get(added.id).label == label
    assert [i.label for i in registry.list()] == [label]


@pytest.mark.parametrize(
    "label", ["x" * 101, "a\nb", "tab\there", "nul\x00", "bell\x07", "a\u2028b"]
)
def test_bad_labels_rejected(registry: Registry, label: str) -> None:
    with pytest.raises(InvalidInput):
        registry.add(label, "pro", SECRET)
    assert registry.list() == []


def test_invalid_inputs(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="unknown plan 'gold'"):
        registry.add("a", "gold", SECRET)
    with pytest.raises(InvalidInput, match="empty"):
        registry.add("a", "pro", "   ")
    with pytest.raises(InvalidInput, match="spaces or control"):
        registry.add("a", "pro", "sk-admin-abc def")
    registry.add("a", "pro", SECRET)
    with pytest.raises(InvalidInput):
        registry.set_plan("a", "enterprise")
    with pytest.raises(InvalidInput):
        registry.set_status("a", "paused")
    with pytest.raises(InvalidInput):
        registry.mark_backfill_requested("a", -1)


@pytest.mark.parametrize("bad_id", ["", "UPPER", "a b", "a|b", "x" * 65, "../etc", SECRET])
def test_bad_ids_not_found_and_not_echoed(registry: Registry, bad_id: str) -> None:
    for call in (registry.get, registry.remove, registry.api_key):
        with pytest.raises(IntegrationNotFound, match="lowercase") as info:
            call(bad_id)
        if bad_id:
            assert bad_id not in str(info.value)


def test_missing_id(registry: Registry) -> None:
    with pytest.raises(IntegrationNotFound, match=r"'nope'.*integrations list"):
        registry.get("nope")
    with pytest.raises(IntegrationNotFound):
        registry.set_plan("nope", "pro")
    with pytest.raises(IntegrationNotFound):
        registry.mark_synced("nope", datetime.now(UTC))


def test_updates(registry: Registry) -> None:
    registry.add("Acme", "free", SECRET)
    assert registry.set_plan("acme", "ultimate").plan == "ultimate"
    registry.set_status("acme", "error", f"401 from OpenAI for key {SECRET}")
    failed = registry.get("acme")
    assert failed.status == "error" and failed.last_error is not None
    assert SECRET not in failed.last_error and "sk-***" in failed.last_error
    later = datetime(2025, 5, 1, 12, tzinfo=UTC)
    registry.mark_synced("acme", later)
    registry.mark_synced("acme", later - timedelta(days=1))  # never moves backwards
    synced = registry.get("acme")
    assert (synced.status, synced.last_error, synced.last_synced_at) == ("active", None, later)
    registry.set_organization("acme", "org-9")
    assert registry.get("acme").organization_id == "org-9"
    registry.mark_backfill_requested("acme", 180)
    registry.mark_backfill_requested("acme", 30)
    assert registry.get("acme").backfilled_days == 180


def test_remove(registry: Registry) -> None:
    registry.add("Acme", "pro", SECRET)
    registry.remove("acme")
    assert registry.list() == []
    with pytest.raises(IntegrationNotFound):
        registry.api_key("acme")
    with pytest.raises(IntegrationNotFound):
        registry.remove("acme")


@given(st.text(max_size=120))
def test_slug_is_always_a_valid_id(label: str) -> None:
    slug = slugify(label)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) and len(slug) <= 48


def test_waits_for_a_briefly_locked_database(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_S", 0.01)  # force the retry path
    holder = sqlite3.connect(registry.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.15, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        assert registry.add("Acme", "pro", SECRET).id == "acme"
    finally:
        release.join()
        holder.close()


def test_gives_up_on_a_database_locked_too_long(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(registry_module, "LOCK_RETRIES", 2)
    holder = sqlite3.connect(registry.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(RegistryError, match="locked by another grafient process"):
            registry.add("Acme", "pro", SECRET)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_key_hint() -> None:
    assert key_hint(SECRET) == "sk-admin-...XYZ7"
    assert key_hint("sk-admin-short") == "sk-admin-..."
    assert key_hint("opaque-token-1234567890") == "...7890"


def test_plaintext_key_never_on_disk_or_in_errors(tmp_path: Path, vault: Vault) -> None:
    home = tmp_path / "home"
    registry = Registry(home / "registry.db", vault)
    keeper = sqlite3.connect(registry.path)  # an open reader keeps the -wal file on disk
    keeper.execute("SELECT count(*) FROM integrations").fetchone()
    errors: list[BaseException] = []
    registry.add("Acme", "pro", SECRET)
    for attempt in (
        lambda: registry.add("Acme", "pro", SECRET),
        lambda: registry.add("x" * 101, "pro", SECRET),
        lambda: registry.add("b", "gold", SECRET),
        lambda: registry.get(SECRET),
        lambda: Registry(home / "registry.db", Vault([generate_master_key()])).api_key("acme"),
    ):
        with pytest.raises(Exception) as info:
            attempt()
        errors.append(info.value)
    registry.set_status("acme", "error", f"boom {SECRET}")
    registry.remove("acme")
    registry.add("Again", "pro", SECRET)
    for error in errors:
        assert SECRET not in str(error) and SECRET not in repr(error)
    needle = SECRET.encode()
    files = [p for p in home.iterdir() if p.name.startswith("registry.db")]
    assert {p.name for p in files} >= {"registry.db", "registry.db-wal"}
    for path in files:
        data = path.read_bytes()
        assert needle not in data and SECRET[-12:].encode() not in data, path.name
    keeper.close()
    data = registry.path.read_bytes()  # after the final checkpoint too
    assert needle not in data and SECRET[-12:].encode() not in data


def test_files_are_private_and_wal(registry: Registry) -> None:
    registry.add("Acme", "pro", SECRET)
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    with sqlite3.connect(registry.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_from_empty_file_and_reopen(tmp_path: Path, vault: Vault) -> None:
    path = tmp_path / "registry.db"
    path.touch()
    assert schema_version(path) == 0
    Registry(path, vault).add("Acme", "pro", SECRET)
    assert schema_version(path) == len(MIGRATIONS)
    again = Registry(path, vault)
    assert schema_version(path) == len(MIGRATIONS)
    assert [i.id for i in again.list()] == ["acme"]


def test_later_migration_applies_to_existing_file(
    tmp_path: Path, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registry.db"
    Registry(path, vault).add("Acme", "pro", SECRET)
    step = ("ALTER TABLE integrations ADD COLUMN notes TEXT NOT NULL DEFAULT ''",)
    monkeypatch.setattr(registry_module, "MIGRATIONS", [*MIGRATIONS, step])
    upgraded = Registry(path, vault)
    assert schema_version(path) == len(MIGRATIONS) + 1
    assert upgraded.api_key("acme") == SECRET
    Registry(path, vault)  # idempotent: the ALTER is not applied twice
    monkeypatch.undo()
    with pytest.raises(RegistryError, match="newer than this grafient"):
        Registry(path, vault)


def test_unwritable_home(tmp_path: Path, vault: Vault) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match=r"cannot write .*registry\.db.*writable folder"):
        Registry(blocker / "home" / "registry.db", vault)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_home(tmp_path: Path, vault: Vault) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    try:
        with pytest.raises(RegistryError, match=r"permission denied.*writable folder"):
            Registry(home / "registry.db", vault)
    finally:
        home.chmod(0o700)


def test_permission_denied_message(
    tmp_path: Path, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith("registry.db"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    path = tmp_path / "registry.db"
    with pytest.raises(RegistryError) as info:
        Registry(path, vault)
    expected = f"cannot write {path}: permission denied; set GRAFIENT_HOME to a writable folder"
    assert str(info.value) == expected


def test_not_a_database(tmp_path: Path, vault: Vault) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="not a readable grafient registry"):
        Registry(path, vault)


def test_rotate_master_key_all_or_nothing(
    shared_registry: Registry, target: str, vault: Vault
) -> None:
    registry = shared_registry
    for n in range(3):
        registry.add(f"org {n}", "pro", f"{SECRET}{n}")
    new = Vault([generate_master_key()])
    _execute(  # corrupt the last row's token
        registry, "UPDATE integrations SET key_token = 'gv1:00000000:AAAA' WHERE id='org-2'"
    )
    with pytest.raises(DecryptionError, match="org-2"):
        registry.rotate_master_key(new)
    assert registry.vault is vault
    assert registry.api_key("org-0") == f"{SECRET}0"  # untouched: still the old key
    registry.remove("org-2")
    assert registry.rotate_master_key(new) == 2
    assert Registry(target, new).api_key("org-1") == f"{SECRET}1"
    with pytest.raises(MasterKeyMismatchError):  # the old key: the environment is wrong
        Registry(target, vault).api_key("org-1")


def test_stale_process_refuses_to_write_with_old_key(
    shared_registry: Registry, target: str, vault: Vault
) -> None:
    registry = shared_registry
    registry.add("Acme", "pro", SECRET)
    stale = Registry(target, vault)
    registry.rotate_master_key(Vault([generate_master_key()]))
    with pytest.raises(RegistryError, match="not loaded"):
        stale.add("Beta", "pro", SECRET)


def test_reloads_vault_after_rotation(tmp_path: Path, target: str) -> None:
    settings = load_settings(_env(str(tmp_path / "home"), target))
    long_running = Registry.from_settings(settings)  # e.g. the daemon
    long_running.add("Acme", "pro", SECRET)
    rotate_master_key_file(settings, Registry.from_settings(settings))  # e.g. the CLI
    assert long_running.api_key("acme") == SECRET
    assert long_running.add("Beta", "pro", SECRET).id == "beta"
    assert Registry.from_settings(settings).api_key("beta") == SECRET


def _add_many(env: dict[str, str], worker: int, count: int, barrier: Barrier) -> None:
    barrier.wait(timeout=60)  # both processes start adding (and making master.key) together
    registry = Registry.from_settings(load_settings(env))
    for n in range(count):
        registry.add(f"Org {worker}-{n}", "pro", f"{SECRET}{worker}{n}")


def test_two_processes_add_at_once(tmp_path: Path, target: str) -> None:
    env = _env(str(tmp_path / "home"), target)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_add_many, args=(env, w, 20, barrier)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    registry = Registry.from_settings(load_settings(env))
    expected = {f"org-{w}-{n}" for w in (1, 2) for n in range(20)}
    assert {i.id for i in registry.list()} == expected
    assert all(
        registry.api_key(f"org-{w}-{n}") == f"{SECRET}{w}{n}" for w in (1, 2) for n in (0, 19)
    )


def test_a_removed_id_is_never_handed_out_again(tmp_path):
    from grafient_pipeline.registry import Registry
    from grafient_pipeline.vault import Vault, generate_master_key

    registry = Registry(tmp_path / "registry.db", Vault([generate_master_key()]))
    first = registry.add("Acme", "free", "sk-admin-" + "a" * 40)
    registry.remove(first.id)

    second = registry.add("Acme", "free", "sk-admin-" + "b" * 40)

    assert (first.id, second.id) == ("acme", "acme-2")
