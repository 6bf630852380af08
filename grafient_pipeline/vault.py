"""AES-256-GCM encryption of stored API keys, and the master key that protects them.

A token looks like ``gv1:<key id>:<urlsafe base64 of nonce (12 bytes) + ciphertext + tag>``.
The integration id is bound as associated data, so a token copied to another row fails.
No message raised here ever holds key material (master key or API key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from grafient_pipeline.settings import Settings

logger = logging.getLogger(__name__)

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
TOKEN_VERSION = "gv1"
MASTER_KEY_ENV = "GRAFIENT_MASTER_KEY"
PREVIOUS_KEY_ENV = "GRAFIENT_MASTER_KEY_PREVIOUS"
NEXT_KEY_SUFFIX = ".next"
GENERATE_HINT = 'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
ENV_SOURCES = (MASTER_KEY_ENV, PREVIOUS_KEY_ENV)

KeyUsage = Callable[[], Mapping[str, int]]
"""How many stored API keys each master key id encrypted (read from the registry)."""


class VaultError(Exception):
    """A problem with stored keys; the message is one line a user can act on."""


class MasterKeyError(VaultError):
    """The master key is missing, unreadable, or not base64 of exactly 32 bytes.

    Always a problem of this process's environment, never of a stored integration.
    """


class MasterKeyMismatchError(MasterKeyError):
    """A stored key names a master key id this process has not loaded (the token is intact)."""


class DecryptionError(VaultError):
    """A stored key cannot be decrypted under its own master key: tampered or malformed."""


class _MalformedKey(ValueError):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def generate_master_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def encode_master_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def master_key_id(key: bytes) -> str:
    """A short public name for a master key (reveals nothing usable about it)."""
    return hashlib.sha256(b"grafient-master-key" + bytes(key)).hexdigest()[:8]


def decode_master_key(
    text: str, source: str = MASTER_KEY_ENV, keys_stored: Callable[[], bool] | None = None
) -> bytes:
    """Decode base64 (standard or URL-safe alphabet) holding exactly 32 bytes.

    ``source`` is an env variable name or a file path; ``keys_stored`` says whether the
    registry holds API keys (unknown means yes), which decides what the error advises.
    """
    try:
        return _decode(text)
    except _MalformedKey as bad:
        stored = True if keys_stored is None else keys_stored()
        raise MasterKeyError(_malformed_key_message(source, bad.problem, stored)) from None


def _decode(text: str) -> bytes:
    raw = text.strip().encode("ascii", errors="replace")
    for altchars in (None, b"-_"):
        try:
            key = base64.b64decode(raw, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) != KEY_SIZE:
            raise _MalformedKey(f"it holds {len(key)} bytes, not {KEY_SIZE}")
        return key
    raise _MalformedKey(f"it is not valid base64 of {KEY_SIZE} bytes")


def _malformed_key_message(source: str, problem: str, keys_stored: bool) -> str:
    """Never advise a new key while stored API keys need the old one: that would orphan them."""
    if source in ENV_SOURCES:
        head = f"{source} is malformed ({problem}): set it to the complete master key"
        if keys_stored:
            return f"{head} the stored API keys were encrypted with (check for a truncated copy)"
        return f"{head}, or generate a new one with: {GENERATE_HINT}"
    head = f"the master key file {source} is damaged ({problem}): restore it from your backup"
    if keys_stored:
        return f"{head}; do not replace it with a new key, the stored API keys need the original"
    return f"{head}, or, as no API key is stored yet, delete it (grafient then makes a new one)"


def token_key_id(token: str) -> str | None:
    """The master key id a token names, or None when it is not a vault token."""
    parts = token.split(":") if isinstance(token, str) else []
    if len(parts) == 3 and parts[0] == TOKEN_VERSION:
        return parts[1]
    return None


class Vault:
    """Encrypts with the first (current) key; decrypts with any loaded key, by key id."""

    def __init__(self, keys: Sequence[bytes], source: str | None = None) -> None:
        if not keys:
            raise MasterKeyError("no master key given")
        self._ciphers: dict[str, AESGCM] = {}
        for key in keys:
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
                size = len(key) if isinstance(key, bytes | bytearray) else 0
                raise MasterKeyError(
                    f"a master key must be exactly {KEY_SIZE} bytes (got {size} bytes); "
                    f"generate one with: {GENERATE_HINT}"
                )
            self._ciphers.setdefault(master_key_id(key), AESGCM(bytes(key)))
        self.key_id: str = master_key_id(keys[0])
        self.source = source  # where the current key came from, for messages

    def __repr__(self) -> str:
        return f"Vault(key_id={self.key_id!r}, loaded={len(self._ciphers)})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every loaded master key, current first."""
        return tuple(self._ciphers)

    def has_key(self, key_id: str | None) -> bool:
        return key_id in self._ciphers

    def encrypt(self, integration_id: str, plaintext: str, key_id: str | None = None) -> str:
        """Encrypt under the current key (or another loaded one, by id)."""
        key_id = key_id or self.key_id
        if key_id not in self._ciphers:
            raise VaultError(f"master key {key_id} is not loaded; cannot encrypt with it")
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[key_id].encrypt(
            nonce, plaintext.encode("utf-8"), _associated_data(integration_id)
        )
        payload = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{TOKEN_VERSION}:{key_id}:{payload}"

    def decrypt(self, integration_id: str, token: str) -> str:
        key_id, blob = _parse_token(integration_id, token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise MasterKeyMismatchError(self._mismatch_message(integration_id, key_id))
        try:
            plain = cipher.decrypt(
                blob[:NONCE_SIZE], blob[NONCE_SIZE:], _associated_data(integration_id)
            )
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt the API key of integration {integration_id!r}: the stored "
                "ciphertext was tampered with or the master key is wrong"
            ) from None
        return plain.decode("utf-8")

    def _mismatch_message(self, integration_id: str, needed: str) -> str:
        loaded = ", ".join(self.key_ids)
        origin = f" from {self.source}" if self.source else ""
        if self.source == MASTER_KEY_ENV:
            fix = f"set {MASTER_KEY_ENV} to master key {needed}, or unset it if master.key holds it"
        else:
            fix = (
                f"restore the master.key holding master key {needed} from your backup, "
                f"or set {MASTER_KEY_ENV} to it"
            )
        return (
            f"integration {integration_id!r} needs master key {needed}, which this process "
            f"has not loaded (it loaded {loaded}{origin}): {fix}; the integration itself is fine"
        )


def _associated_data(integration_id: str) -> bytes:
    return b"grafient:" + integration_id.encode("utf-8")


def _parse_token(integration_id: str, token: str) -> tuple[str, bytes]:
    key_id = token_key_id(token)
    blob = b""
    if key_id is not None:
        try:
            blob = base64.b64decode(token.split(":")[2], altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            blob = b""
    if key_id is None or len(blob) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionError(
            f"the stored API key of integration {integration_id!r} is malformed "
            "(not a gv1 vault token); remove the integration and add it again"
        )
    return key_id, blob


# --- master key files --------------------------------------------------------------------


def next_key_path(settings: Settings) -> Path:
    """Where a rotation stages the new master key before it replaces master.key."""
    path = settings.master_key_path
    return path.with_name(path.name + NEXT_KEY_SUFFIX)


def ensure_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot create {home}: {_reason(exc)}; set GRAFIENT_HOME to a writable folder"
        ) from None


def write_key_file(path: Path, key: bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``key`` unless it exists; True when we created it.

    The key is written to a private temporary file first and hard-linked into place, so no
    process ever sees a partly written key file and two racing writers cannot both win.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_private(tmp, key)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create in place
            return _create_in_place(path, key)
        _fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise MasterKeyError(
            f"cannot write {path}: {_reason(exc)}; set GRAFIENT_HOME to a writable folder"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_private(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(encode_master_key(key).encode("ascii") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def _create_in_place(path: Path, key: bytes) -> bool:
    try:
        _write_private(path, key)
    except FileExistsError:
        return False
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_key_file(path: Path, keys_stored: Callable[[], bool] | None = None) -> bytes:
    """Read a base64 master key file; tighten its mode to 0600 (with a warning) if loose."""
    text = ""
    for _ in range(20):  # an in-place writer may not have written yet
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise MasterKeyError(f"cannot read {path}: {_reason(exc)}") from None
        if text.strip():
            break
        time.sleep(0.05)
    _tighten_mode(path)
    return decode_master_key(text, str(path), keys_stored)


def _tighten_mode(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            logger.warning("%s had mode %o (readable by others); set it to 0600", path, mode)
    except OSError as exc:
        logger.warning("%s is readable by other users and cannot be fixed: %s", path, exc)


def load_vault(
    settings: Settings, env: Mapping[str, str] | None = None, key_usage: KeyUsage | None = None
) -> Vault:
    """The master key(s): GRAFIENT_MASTER_KEY, else $GRAFIENT_HOME/master.key.

    Extra decrypt-only keys: GRAFIENT_MASTER_KEY_PREVIOUS (env-managed keys) or
    master.key.next (file-managed keys, left behind by an interrupted rotation).
    ``key_usage`` reads the registry's stored keys per master key id (called only when
    needed); without it there is no registry, so nothing is stored. master.key is created
    only when nothing is stored: a new key could never decrypt keys made under a lost one.
    """
    env = os.environ if env is None else env
    usage = key_usage or dict

    def keys_stored() -> bool:
        return bool(usage())

    if settings.master_key_b64:
        keys = [decode_master_key(settings.master_key_b64, MASTER_KEY_ENV, keys_stored)]
        previous = getattr(settings, "master_key_previous_b64", None) or env.get(PREVIOUS_KEY_ENV)
        if previous:
            keys.append(decode_master_key(previous, PREVIOUS_KEY_ENV, keys_stored))
        return Vault(keys, source=MASTER_KEY_ENV)
    path = settings.master_key_path
    ensure_home(path.parent)
    if not path.exists():
        _create_master_key_if_nothing_stored(path, usage)
    keys = [read_key_file(path, keys_stored)]
    staged = next_key_path(settings)
    if staged.exists():
        keys.append(read_key_file(staged, keys_stored))
    return Vault(keys, source=str(path))


def _create_master_key_if_nothing_stored(path: Path, usage: KeyUsage) -> None:
    stored = usage()
    if stored and not path.exists():  # re-checked: a racing process may have just made it
        raise MasterKeyError(_missing_key_message(path, stored))
    write_key_file(path, generate_master_key())


def _missing_key_message(path: Path, stored: Mapping[str, int]) -> str:
    count = sum(stored.values())
    ids = ", ".join(sorted(stored))
    keys = "stored API key was" if count == 1 else "stored API keys were"
    return (
        f"{path} is missing, but {count} {keys} encrypted with master key {ids}: restore "
        f"master.key from your backup (or set {MASTER_KEY_ENV} to that key); grafient will not "
        "create a new master key, which could never decrypt them"
    )


def home_permission_warning(home: Path) -> str | None:
    """A warning when GRAFIENT_HOME can be read by group or other users, else None."""
    try:
        mode = stat.S_IMODE(home.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"warning: {home} is accessible to other users (mode {mode:o}); "
        f"restrict it with: chmod 700 {home}"
    )


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


# --- rotation ------------------------------------------------------------------------------


class KeyStore(Protocol):
    """What rotation needs from the registry (kept abstract: the vault does not import it)."""

    @property
    def vault(self) -> Vault: ...

    def rotate_master_key(self, new_vault: Vault) -> int: ...


def rotate_master_key_file(settings: Settings, store: KeyStore) -> int:
    """Rotate the master key and re-encrypt every stored key; returns how many.

    Env-managed keys: the operator sets the new key in GRAFIENT_MASTER_KEY and the old one in
    GRAFIENT_MASTER_KEY_PREVIOUS; this re-encrypts everything under the new one.
    File-managed keys: stage a new key in master.key.next (reused if a crash left one),
    re-encrypt in one transaction, then atomically replace master.key. load_vault also reads
    master.key.next, so a crash between the steps loses nothing; rotating again finishes it.
    """
    if settings.master_key_b64:
        if len(store.vault.key_ids) < 2:
            raise VaultError(
                f"{MASTER_KEY_ENV} is set, so you manage the master key: generate a new one "
                f"with {GENERATE_HINT}, set it as {MASTER_KEY_ENV}, put the old key in "
                f"{PREVIOUS_KEY_ENV}, then run `grafient keys rotate` again"
            )
        return store.rotate_master_key(store.vault)
    staged = next_key_path(settings)
    if not staged.exists():
        write_key_file(staged, generate_master_key())
    count = store.rotate_master_key(Vault([read_key_file(staged)]))
    _install_staged_key(staged, settings.master_key_path)
    return count


def _install_staged_key(staged: Path, target: Path) -> None:
    try:
        os.replace(staged, target)
    except OSError as exc:
        raise MasterKeyError(
            f"the stored keys now use {staged}, but it cannot replace {target}: "
            f"{_reason(exc)}; fix that and run `grafient keys rotate` again"
        ) from None
    _fsync_dir(target.parent)
