"""Vault: AES-256-GCM tokens, master key loading, file-level rotation."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings
from grafient_pipeline.vault import (
    DecryptionError,
    MasterKeyError,
    MasterKeyMismatchError,
    Vault,
    VaultError,
    decode_master_key,
    generate_master_key,
    home_permission_warning,
    load_vault,
    master_key_id,
    next_key_path,
    rotate_master_key_file,
    token_key_id,
)

SECRET = "sk-admin-0123456789abcdefghijklmnopqrstuvwxyzABCD"


def file_settings(tmp_path: Path) -> Settings:
    return load_settings({"GRAFIENT_HOME": str(tmp_path / "home")})


def env_settings(tmp_path: Path, key: bytes) -> Settings:
    return load_settings({"GRAFIENT_HOME": str(tmp_path / "home"), "GRAFIENT_MASTER_KEY": b64(key)})


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def flip(token: str, index: int) -> str:
    prefix, key_id, payload = token.split(":")
    blob = bytearray(base64.urlsafe_b64decode(payload))
    blob[index] ^= 0x01
    return f"{prefix}:{key_id}:{base64.urlsafe_b64encode(bytes(blob)).decode()}"


def test_round_trip_and_format() -> None:
    vault = Vault([generate_master_key()])
    token = vault.encrypt("acme", SECRET)
    assert token.startswith(f"gv1:{vault.key_id}:")
    assert SECRET not in token
    assert vault.decrypt("acme", token) == SECRET
    assert vault.encrypt("acme", SECRET) != token  # fresh nonce each time
    assert token_key_id(token) == vault.key_id


@settings(max_examples=50, deadline=None)
@given(st.text(), st.text(min_size=1, max_size=64))
def test_round_trip_any_text(plaintext: str, integration_id: str) -> None:
    vault = Vault([bytes(32)])
    assert vault.decrypt(integration_id, vault.encrypt(integration_id, plaintext)) == plaintext


def test_key_id_is_public_digest() -> None:
    key = bytes(range(32))
    assert len(master_key_id(key)) == 8
    assert Vault([key]).key_id == master_key_id(key)
    assert key.hex()[:8] not in master_key_id(key)


def test_tampered_ciphertext_names_integration() -> None:
    vault = Vault([generate_master_key()])
    token = vault.encrypt("acme", SECRET)
    for index in (0, 12, 20, -1):  # nonce, ciphertext, tag
        with pytest.raises(DecryptionError, match=r"'acme'.*tampered") as info:
            vault.decrypt("acme", flip(token, index))
        assert not isinstance(info.value, MasterKeyError)  # the row is broken, not the env


def test_token_moved_to_another_row_fails() -> None:
    vault = Vault([generate_master_key()])
    token = vault.encrypt("row-a", SECRET)
    with pytest.raises(DecryptionError, match="row-b"):
        vault.decrypt("row-b", token)


def test_wrong_master_key_names_integration_and_both_key_ids() -> None:
    needed, loaded = generate_master_key(), generate_master_key()
    token = Vault([needed]).encrypt("acme", SECRET)
    other = Vault([loaded], source="GRAFIENT_MASTER_KEY")
    with pytest.raises(MasterKeyMismatchError) as info:
        other.decrypt("acme", token)
    message = str(info.value)
    assert f"'acme' needs master key {master_key_id(needed)}" in message
    assert f"loaded {master_key_id(loaded)} from GRAFIENT_MASTER_KEY" in message
    assert f"set GRAFIENT_MASTER_KEY to master key {master_key_id(needed)}" in message
    assert not isinstance(info.value, DecryptionError)


@pytest.mark.parametrize(
    "token", ["", "plain", "gv1:abc", "gv2:12345678:AAAA", "gv1:12345678:!!!", "gv1:1:QUJD"]
)
def test_malformed_token(token: str) -> None:
    vault = Vault([generate_master_key()])
    with pytest.raises(DecryptionError, match="malformed"):
        vault.decrypt("acme", token)


def test_decrypts_with_any_loaded_key_encrypts_with_first() -> None:
    old, new = generate_master_key(), generate_master_key()
    token = Vault([old]).encrypt("acme", SECRET)
    both = Vault([new, old])
    assert both.decrypt("acme", token) == SECRET
    assert token_key_id(both.encrypt("acme", SECRET)) == master_key_id(new)
    assert both.key_ids == (master_key_id(new), master_key_id(old))


def test_vault_rejects_bad_key_sizes() -> None:
    with pytest.raises(MasterKeyError, match="exactly 32 bytes"):
        Vault([b"short"])
    with pytest.raises(MasterKeyError):
        Vault([])


def test_repr_hides_keys() -> None:
    key = generate_master_key()
    vault = Vault([key])
    assert b64(key) not in repr(vault) and key.hex() not in repr(vault)


@pytest.mark.parametrize(
    ("value", "size"),
    [(b64(b"x" * 16), "16"), (b64(b"x" * 31), "31"), (b64(b"x" * 33), "33")],
)
def test_bad_env_key_size(tmp_path: Path, value: str, size: str) -> None:
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_MASTER_KEY": value})
    expected = f"malformed \\(it holds {size} bytes, not 32\\)"
    with pytest.raises(MasterKeyError, match=expected) as info:
        load_vault(settings, env={})
    assert "python -c" in str(info.value)  # nothing stored yet: a new key is fine


def test_bad_env_key_encoding_never_echoed(tmp_path: Path) -> None:
    value = "not base64 at all! secret-ish"
    settings = load_settings({"GRAFIENT_HOME": str(tmp_path), "GRAFIENT_MASTER_KEY": value})
    with pytest.raises(MasterKeyError, match="not valid base64 of 32 bytes") as info:
        load_vault(settings, env={})
    assert value not in str(info.value)


def test_urlsafe_and_padded_env_keys_accepted() -> None:
    key = bytes([251] * 32)  # encodes with + and / in the standard alphabet
    assert decode_master_key(b64(key)) == key
    assert decode_master_key(base64.urlsafe_b64encode(key).decode() + "\n") == key


def test_env_key_wins_and_writes_no_file(tmp_path: Path) -> None:
    key = generate_master_key()
    vault = load_vault(env_settings(tmp_path, key), env={})
    assert vault.key_id == master_key_id(key)
    assert not (tmp_path / "home" / "master.key").exists()


def test_previous_env_key_is_decrypt_only(tmp_path: Path) -> None:
    old, new = generate_master_key(), generate_master_key()
    vault = load_vault(env_settings(tmp_path, new), env={"GRAFIENT_MASTER_KEY_PREVIOUS": b64(old)})
    assert vault.key_id == master_key_id(new)
    assert vault.decrypt("a", Vault([old]).encrypt("a", SECRET)) == SECRET


def test_master_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    first = load_vault(settings, env={})
    path = settings.master_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.home.stat().st_mode) == 0o700
    assert len(base64.b64decode(path.read_text().strip())) == 32
    assert load_vault(settings, env={}).key_id == first.key_id
    assert [p.name for p in settings.home.iterdir()] == ["master.key"]  # no temp files left


def test_loose_master_key_file_is_tightened(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    key_id = load_vault(settings, env={}).key_id
    os.chmod(settings.master_key_path, 0o644)
    assert load_vault(settings, env={}).key_id == key_id
    assert stat.S_IMODE(settings.master_key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda text: text[:20], "it holds 15 bytes, not 32"),  # truncated
        (lambda text: text[:10] + "!*" + text[12:], "it is not valid base64 of 32 bytes"),
        (lambda text: "", "it holds 0 bytes, not 32"),
    ],
)
def test_damaged_master_key_file_says_restore_from_backup(
    tmp_path: Path, damage: Callable[[str], str], problem: str
) -> None:
    settings = file_settings(tmp_path)
    Registry.from_settings(settings).add("acme", "pro", SECRET)
    path = settings.master_key_path
    path.write_text(damage(path.read_text()))
    with pytest.raises(MasterKeyError) as info:
        Registry.from_settings(settings)
    message = str(info.value)
    assert f"the master key file {path} is damaged ({problem})" in message
    assert "restore it from your backup" in message
    assert "do not replace it with a new key" in message
    assert "python -c" not in message and "generate" not in message


def test_damaged_master_key_file_on_a_fresh_home_may_be_deleted(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    settings.home.mkdir(parents=True)
    settings.master_key_path.write_text(b64(b"k" * 20))
    with pytest.raises(MasterKeyError, match=r"restore it from your backup, or.*delete it"):
        Registry.from_settings(settings)


def test_malformed_env_key_with_stored_keys_never_advises_a_new_one(tmp_path: Path) -> None:
    key = generate_master_key()
    Registry.from_settings(env_settings(tmp_path, key)).add("acme", "pro", SECRET)
    truncated = load_settings(
        {"GRAFIENT_HOME": str(tmp_path / "home"), "GRAFIENT_MASTER_KEY": b64(key)[:30]}
    )
    with pytest.raises(MasterKeyError) as info:
        Registry.from_settings(truncated)
    message = str(info.value)
    assert "GRAFIENT_MASTER_KEY is malformed" in message
    assert "the stored API keys were encrypted with" in message
    assert "python -c" not in message and "generate" not in message
    assert b64(key)[:30] not in message


# --- a missing master.key ------------------------------------------------------------------


def test_missing_master_key_with_stored_keys_is_refused_and_not_recreated(
    tmp_path: Path,
) -> None:
    settings = file_settings(tmp_path)
    registry = Registry.from_settings(settings)
    for n in range(2):
        registry.add(f"org {n}", "pro", f"{SECRET}{n}")
    key_id = registry.vault.key_id
    settings.master_key_path.unlink()
    with pytest.raises(MasterKeyError) as info:
        Registry.from_settings(settings)  # what even `grafient integrations list` does first
    message = str(info.value)
    assert f"{settings.master_key_path} is missing" in message
    assert f"2 stored API keys were encrypted with master key {key_id}" in message
    assert "restore master.key from your backup" in message and "GRAFIENT_MASTER_KEY" in message
    assert not settings.master_key_path.exists()
    assert sorted(p.name for p in settings.home.iterdir() if "master" in p.name) == []


def test_missing_master_key_noticed_by_a_running_process_is_not_recreated(
    tmp_path: Path,
) -> None:
    settings = file_settings(tmp_path)
    daemon = Registry.from_settings(settings)
    daemon.add("acme", "pro", SECRET)
    settings.master_key_path.unlink()
    foreign = Vault([generate_master_key()]).encrypt("acme", SECRET)
    with sqlite3.connect(settings.registry_path) as conn:  # a token the daemon must reload for
        conn.execute("UPDATE integrations SET key_token = ?", (foreign,))
    with pytest.raises(MasterKeyError, match="is missing"):
        daemon.api_key("acme")
    assert not settings.master_key_path.exists()


def test_missing_master_key_on_a_fresh_home_is_created(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    registry = Registry.from_settings(settings)  # new home: no registry file yet
    assert settings.master_key_path.exists()
    added = registry.add("acme", "pro", SECRET)
    registry.remove(added.id)  # a registry without stored keys counts as fresh
    settings.master_key_path.unlink()
    again = Registry.from_settings(settings)
    assert settings.master_key_path.exists()
    assert again.add("beta", "pro", SECRET).id == "beta"
    assert again.api_key("beta") == SECRET


# --- the wrong GRAFIENT_MASTER_KEY in one shell --------------------------------------------


def test_wrong_env_master_key_is_a_mismatch_and_leaves_the_row_alone(tmp_path: Path) -> None:
    right, wrong = generate_master_key(), generate_master_key()
    owner = Registry.from_settings(env_settings(tmp_path, right))
    owner.add("acme", "pro", SECRET)
    owner.mark_synced("acme", owner.get("acme").created_at)
    before = owner.get("acme")
    shell = Registry.from_settings(env_settings(tmp_path, wrong))
    assert [i.id for i in shell.list()] == ["acme"]  # listing needs no key
    with pytest.raises(MasterKeyMismatchError) as info:
        shell.api_key("acme")
    message = str(info.value)
    assert f"needs master key {master_key_id(right)}" in message
    assert f"loaded {master_key_id(wrong)} from GRAFIENT_MASTER_KEY" in message
    assert b64(right) not in message and b64(wrong) not in message
    assert isinstance(info.value, MasterKeyError)  # the environment is wrong, not the row
    assert shell.get("acme") == before  # status stays active, no last_error
    assert owner.api_key("acme") == SECRET


def test_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = load_settings({"GRAFIENT_HOME": str(blocker / "home")})
    with pytest.raises(MasterKeyError, match="set GRAFIENT_HOME to a writable folder"):
        load_vault(settings, env={})


def test_home_permission_warning(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert home_permission_warning(home) is None
    home.mkdir(mode=0o700)
    os.chmod(home, 0o700)
    assert home_permission_warning(home) is None
    os.chmod(home, 0o755)
    warning = home_permission_warning(home)
    assert warning is not None and "chmod 700" in warning and str(home) in warning


# --- file-level rotation -------------------------------------------------------------------


def test_rotate_file_key(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    registry = Registry.from_settings(settings)
    ids = [registry.add(f"org {n}", "pro", f"{SECRET}{n}").id for n in range(3)]
    old_vault = load_vault(settings, env={})
    assert rotate_master_key_file(settings, registry) == 3
    assert not next_key_path(settings).exists()
    assert stat.S_IMODE(settings.master_key_path.stat().st_mode) == 0o600
    fresh = Registry.from_settings(settings)
    assert fresh.vault.key_id != old_vault.key_id
    assert [fresh.api_key(i) for i in ids] == [f"{SECRET}{n}" for n in range(3)]
    stale = Registry(settings.registry_path, old_vault)  # the old master key no longer works
    with pytest.raises(MasterKeyMismatchError, match="not loaded"):
        stale.api_key(ids[0])


def test_crash_between_commit_and_replace_is_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = file_settings(tmp_path)
    registry = Registry.from_settings(settings)
    key_id = registry.add("acme", "free", SECRET).id

    def crash(*_: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        rotate_master_key_file(settings, registry)
    monkeypatch.undo()
    assert next_key_path(settings).exists()
    # a new process: rows are under master.key.next, master.key still holds the old key
    after_crash = Registry.from_settings(settings)
    assert after_crash.api_key(key_id) == SECRET
    second = after_crash.add("beta", "pro", SECRET + "2")  # written with the pinned (new) key
    assert rotate_master_key_file(settings, after_crash) == 2  # finishing reuses .next
    done = Registry.from_settings(settings)
    assert (done.api_key(key_id), done.api_key(second.id)) == (SECRET, SECRET + "2")
    assert len(done.vault.key_ids) == 1


def test_crash_before_commit_keeps_old_key_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = file_settings(tmp_path)
    registry = Registry.from_settings(settings)
    integration = registry.add("acme", "free", SECRET)

    def crash(self: Registry, new_vault: Vault) -> int:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Registry, "rotate_master_key", crash)
    with pytest.raises(KeyboardInterrupt):
        rotate_master_key_file(settings, registry)
    monkeypatch.undo()
    assert Registry.from_settings(settings).api_key(integration.id) == SECRET
    assert rotate_master_key_file(settings, Registry.from_settings(settings)) == 1
    assert Registry.from_settings(settings).api_key(integration.id) == SECRET


def test_env_managed_rotation_refused_without_previous(tmp_path: Path) -> None:
    settings = env_settings(tmp_path, generate_master_key())
    registry = Registry(settings.registry_path, load_vault(settings, env={}))
    with pytest.raises(VaultError, match="GRAFIENT_MASTER_KEY_PREVIOUS"):
        rotate_master_key_file(settings, registry)


def test_env_managed_rotation_with_previous(tmp_path: Path) -> None:
    old, new = generate_master_key(), generate_master_key()
    old_settings = env_settings(tmp_path, old)
    before = Registry(old_settings.registry_path, load_vault(old_settings, env={}))
    integration = before.add("acme", "pro", SECRET)
    settings = env_settings(tmp_path, new)
    vault = load_vault(settings, env={"GRAFIENT_MASTER_KEY_PREVIOUS": b64(old)})
    assert rotate_master_key_file(settings, Registry(settings.registry_path, vault)) == 1
    only_new = Registry(settings.registry_path, Vault([new]))
    assert only_new.api_key(integration.id) == SECRET
    with pytest.raises(MasterKeyMismatchError):
        Registry(settings.registry_path, Vault([old])).api_key(integration.id)
