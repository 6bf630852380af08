"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, `initdb` into a
temporary folder, `pg_ctl` on a free port, stopped at the end of the session.

As root, the server runs as the `postgres` user (PostgreSQL refuses root). Each test that asks
for `postgres_url` gets a database of its own. Without the binaries the tests skip, except in CI
(`CI=true`), where a missing server is a failure: `.ci/run` installs the package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "grafient"
PASSWORD = "pg-test-secret-7f3a"  # tests check it never reaches a file or a message
SERVER_USER = "postgres"  # Debian's system user for the server, used when the tests run as root
INSTALL_HINT = "apt-get install -y postgresql"


def find_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres", scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(password_file),
            "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8",
        )  # fmt: skip
        password_file.unlink()
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg2

        name = "t_" + uuid.uuid4().hex[:16]
        connection = psycopg2.connect(self.url(scheme="postgresql"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return self.url(name)


def _private_folder() -> Path:
    """A folder the server's user owns (pytest's tmp_path is root's own, closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="grafient-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER, SERVER_USER)
    return folder


def _missing() -> str | None:
    """Why the tests cannot start a server here, or None."""
    if find_bindir() is None:
        return f"PostgreSQL's server binaries are missing ({INSTALL_HINT})"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is missing (the postgres extra: pip install -e '.[dev,postgres]')"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if reason := _missing():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs it)")
        pytest.skip(reason)
    bindir = find_bindir()
    assert bindir is not None
    server = PostgresServer(bindir, _private_folder(), free_port())
    try:
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database of this test's own on the session's server (postgresql+psycopg2:// URL)."""
    return postgres_server.create_database()
