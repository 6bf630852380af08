"""Issue 9, secrets: after the whole demo flow and a user's own integration (added, synced, then
failing on a revoked key), no admin key -- nor any 12-character piece of one -- is in any file
under GRAFIENT_HOME or in anything the CLI printed. The master key stays in master.key (0600).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline.providers.anthropic.emulator import DEMO_ORGS as ANTHROPIC_DEMO_ORGS
from grafient_pipeline.providers.openai.emulator import DEMO_ORGS, CostsEmulator
from tests.conftest import run_cli
from tests.test_idempotency import SECRET_PIECE, key_pieces

MY_ORG = "org-secret-keeper"
MY_KEY = "sk-admin-Zq7" + "xK2vB9mN4pL8wR3tY6uJ1hG5fD0sA" + "-unique-tail-8c1e"
# Alert channel secrets (issue 16): the secret part of a Slack webhook URL, a signing secret,
# an SMTP password.
SLACK_PATH = "/services/T0Qw8" + "Zr4/B0Lm7Xc2/" + "Hv6Jp1Ks9Ty3Nd5Fa0"
HOOK_SECRET = "whsec-" + "Pn4Rt8Wz2Yc6Vb0" + "-signing"
SMTP_PASSWORD = "smtp-" + "Gq5Lk9Hd3Ms7Xe1" + "-password"


def grafient(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return run_cli(*args, stdin=stdin, env=env, timeout=300)


def files_under(root: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(root):
        for name in names:
            yield Path(folder) / name


def leaks(blob: bytes, secrets: dict[str, set[str]]) -> list[str]:
    found = []
    for name, pieces in secrets.items():
        for piece in pieces:
            if piece.encode() in blob or piece.encode("utf-16-le") in blob:
                found.append(f"{name}:{piece}")
                break
    return found


def duckdb_text(path: Path) -> bytes:
    """Every text value in the warehouse (DuckDB may compress strings on disk)."""
    out = []
    with duckdb.connect(str(path), read_only=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR'"
        ).fetchall()
        for table, column in columns:
            for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}"').fetchall():
                out.append(str(value))
    return "\n".join(out).encode()


def sqlite_text(path: Path) -> bytes:
    out = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                out.extend(str(v) for v in row)
    finally:
        conn.close()
    return "\n".join(out).encode()


def demo_key_pieces(org_id: str, key: str) -> set[str]:
    """A demo key spells its organization id before its secret part; pieces that lie wholly
    in that public prefix (``sk-admin-demo-acme-research-``) are not key material."""
    public = key[: key.index("demo-") + len(f"demo-{org_id.removeprefix('org-')}-")]
    assert key.startswith(public) and len(key) - len(public) >= 16
    return {piece for piece in key_pieces(key) if piece not in public}


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFIENT_", "DAGSTER_"))}
    env["GRAFIENT_HOME"] = str(tmp_path / "home")
    env["GRAFIENT_DAGSTER_URL"] = "http://127.0.0.1:9"  # closed: runs go in-process
    return env


def test_no_key_material_anywhere_after_demo_and_own_integration(home_env: dict[str, str]):
    home = Path(home_env["GRAFIENT_HOME"])
    outputs: list[str] = []

    def run(*args: str, stdin: str = "", ok: bool = True) -> subprocess.CompletedProcess:
        done = grafient(home_env, *args, stdin=stdin)
        outputs.append(done.stdout + done.stderr)
        assert (done.returncode == 0) == ok, (args, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    run("demo", "--no-ui", "--emulator-port", "0")
    with CostsEmulator({MY_ORG: MY_KEY}, seed=5) as emulator:
        home_env["GRAFIENT_OPENAI_BASE_URL"] = emulator.base_url
        added = run("integrations", "add", "--label", "Keeper", "--plan", "pro", "--no-backfill",
                    "--key-stdin", stdin=MY_KEY + "\n")  # fmt: skip
        integration_id = added.stdout.strip()
        run("sync", integration_id)
        run("integrations", "test", integration_id)
        emulator.revoke_key(MY_KEY)
        run("sync", integration_id, ok=False)  # the 401 is in the run's logs and last_error
    listed = run("integrations", "list", "--json")
    run("integrations", "list")
    run("sql", "SELECT * FROM dim_integrations")
    run("sql", "SELECT * FROM raw_openai_costs LIMIT 50", "--csv")
    run("alerts", "add-channel", "slack", "--slack-webhook-stdin",
        stdin=f"https://127.0.0.1:9{SLACK_PATH}\n")  # fmt: skip
    run("alerts", "add-channel", "hook", "--webhook-url", "http://127.0.0.1:9/hook",
        "--secret-stdin", stdin=HOOK_SECRET + "\n")  # fmt: skip
    run("alerts", "add-channel", "mail", "--smtp", "127.0.0.1:9", "--from", "a@example.com",
        "--to", "b@example.com", "--user", "alerts", "--password-stdin",
        stdin=SMTP_PASSWORD + "\n")  # fmt: skip
    run("alerts", "list")
    run("alerts", "list", "--json")
    run("alerts", "test", "hook", ok=False)  # nothing listens: the error names the host only
    run("alerts", "test", "mail", ok=False)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[integration_id]["status"] == "error"
    assert len(rows) == 4  # the demo's three (two OpenAI, one Anthropic) and our own

    master_key = (home / "master.key").read_text().strip()
    demo_keys = {**DEMO_ORGS, **ANTHROPIC_DEMO_ORGS}
    secrets = {f"admin key {org}": demo_key_pieces(org, key) for org, key in demo_keys.items()}
    secrets["admin key (own)"] = key_pieces(MY_KEY)
    secrets["master key"] = key_pieces(master_key)
    secrets["slack webhook path"] = key_pieces(SLACK_PATH)
    secrets["webhook signing secret"] = key_pieces(HOOK_SECRET)
    secrets["smtp password"] = key_pieces(SMTP_PASSWORD)
    assert all(len(piece) == SECRET_PIECE for pieces in secrets.values() for piece in pieces)

    scanned = 0
    for path in files_under(home):
        if path.name == "master.key":
            continue
        blob = path.read_bytes()
        scanned += 1
        assert not leaks(blob, secrets), f"key material in {path.relative_to(home)}"
        if path.suffix == ".duckdb":
            assert not leaks(duckdb_text(path), secrets), f"key material in {path.name} values"
        elif path.suffix == ".db" and blob.startswith(b"SQLite format 3"):
            assert not leaks(sqlite_text(path), secrets), f"key material in {path} rows"
    names = {p.name for p in files_under(home)}
    assert {"warehouse.duckdb", "registry.db", "runs.db"} <= names
    assert any(n.endswith((".out", ".err", ".complete")) for n in names)  # compute logs
    assert scanned >= 6
    for text in outputs:
        assert not leaks(text.encode(), secrets), f"key material in CLI output: {text[:200]!r}"
    mode = stat.S_IMODE((home / "master.key").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_home_readable_by_others_gets_a_warning(home_env: dict[str, str]):
    home = Path(home_env["GRAFIENT_HOME"])
    assert grafient(home_env, "integrations", "list").returncode == 0
    quiet = grafient(home_env, "integrations", "list")
    assert "warning" not in quiet.stderr.lower()
    home.chmod(0o755)

    loud = grafient(home_env, "integrations", "list")

    assert loud.returncode == 0
    assert "warning" in loud.stderr.lower() and str(home) in loud.stderr
    assert "chmod 700" in loud.stderr
    assert "Traceback" not in loud.stderr


def test_home_warning_is_one_clean_line(home_env: dict[str, str]):
    home = Path(home_env["GRAFIENT_HOME"])
    assert grafient(home_env, "integrations", "list").returncode == 0
    home.chmod(0o750)
    loud = grafient(home_env, "integrations", "list")
    lines = [line for line in loud.stderr.splitlines() if not line.startswith("home: ")]
    assert len(lines) == 1 and "warning" in lines[0], loud.stderr
    assert lines[0].lower().count("warning:") == 1, lines[0]
