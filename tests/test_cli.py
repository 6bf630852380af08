"""The `grafient` command as a user runs it: real processes, the emulator over real HTTP."""

from __future__ import annotations

import argparse
import ast
import io
import json
import signal
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from grafient_pipeline import cli
from grafient_pipeline.definitions import build_definitions
from grafient_pipeline.defs.resources import RegistryResource
from grafient_pipeline.instance import get_instance
from grafient_pipeline.plans import DateRange
from grafient_pipeline.registry import IntegrationNotFound
from grafient_pipeline.runs import SyncSummary
from grafient_pipeline.sync import Slice, utc_today
from tests.conftest import ADMIN_KEY, ORG_ID, run_cli

SECRET_PIECES = {ADMIN_KEY[i : i + 12] for i in range(len(ADMIN_KEY) - 11)}


grafient = run_cli


def assert_no_secret(text: str) -> None:
    leaked = [piece for piece in SECRET_PIECES if piece in text]
    assert not leaked, f"key material in output: {leaked[:1]}"


def add(label: str = "Acme Prod", plan: str = "free", key: str = ADMIN_KEY):
    return grafient(
        "integrations", "add", "--label", label, "--plan", plan, "--key-stdin", "--no-backfill",
        stdin=key + "\n",
    )  # fmt: skip


def test_add_prints_the_id_and_list_masks_the_key(settings):
    added = add()
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "acme-prod"

    listed = grafient("integrations", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["id"] == "acme-prod"
    assert row["key_hint"] == f"sk-admin-...{ADMIN_KEY[-4:]}"
    assert row["organization_id"] == ORG_ID
    assert set(row) == {
        "id",
        "label",
        "provider",
        "plan",
        "status",
        "organization_id",
        "last_synced_at",
        "last_error",
        "key_hint",
    }
    table = grafient("integrations", "list")
    assert "acme-prod" in table.stdout
    for output in (added.stdout, added.stderr, listed.stdout, table.stdout):
        assert_no_secret(output)
    assert_no_secret(Path(settings.registry_path).read_bytes().decode("latin-1"))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "admin key"),
        ("sk-admin-not-a-known-key-0000000000000000000", "401"),
        ("", "no key"),
    ],
)
def test_add_refuses_keys_that_fail_test_connection(settings, key, expected):
    result = add(key=key)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert json.loads(grafient("integrations", "list", "--json").stdout) == []
    if key:
        assert key[10:22] not in result.stderr


def test_bad_input_is_one_line_and_non_zero(settings):
    assert add().returncode == 0
    duplicate = add()
    assert duplicate.returncode == 1 and "label" in duplicate.stderr.lower()
    same_org = add(label="Acme Again")  # the same organization under another label
    assert same_org.returncode == 1 and "already connected as 'Acme Prod'" in same_org.stderr
    assert "set-key acme-prod" in same_org.stderr
    for args in (
        ("integrations", "test", "no-such-id"),
        ("integrations", "remove", "no-such-id"),
        ("sync", "acme-prod", "--start", "yesterday"),
        ("sql", "SELECT * FROM no_such_table"),
    ):
        result = grafient(*args)
        assert result.returncode == 1, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("grafient: error:"), result.stderr
    assert grafient("integrations", "set-plan", "acme-prod", "gold").returncode == 2


def test_sync_outside_the_plan_window_is_refused_before_any_request(settings, emulator):
    assert add(plan="free").returncode == 0
    before = emulator.request_count
    old = (utc_today() - timedelta(days=45)).isoformat()

    result = grafient("sync", "acme-prod", "--start", old)

    assert result.returncode == 1
    earliest = (utc_today() - timedelta(days=29)).isoformat()
    assert "free plan" in result.stderr and "30-day" in result.stderr and earliest in result.stderr
    assert emulator.request_count == before


def test_force_sync_then_sql(settings, emulator):
    assert add(plan="pro").returncode == 0

    synced = grafient("sync", "acme-prod")

    assert synced.returncode == 0, synced.stderr
    assert "in-process" in synced.stdout and "rows" in synced.stdout
    today = utc_today()
    expected = emulator.expected_total(ORG_ID, today - timedelta(days=1), today)
    csv_out = grafient("sql", "SELECT sum(amount_usd)::VARCHAR AS total FROM fct_costs", "--csv")
    assert csv_out.returncode == 0, csv_out.stderr
    assert csv_out.stdout.splitlines() == ["total", f"{expected:.16f}"]
    table = grafient("sql", "SELECT token_type, count(*) AS n FROM fct_costs GROUP BY 1 ORDER BY 1")
    assert "token_type" in table.stdout and "rows)" in table.stdout
    assert_no_secret(synced.stdout + synced.stderr)


def test_revoked_key_sets_error_status(settings, emulator):
    assert add().returncode == 0
    emulator.revoke_key(ADMIN_KEY)

    tested = grafient("integrations", "test", "acme-prod")

    assert tested.returncode == 1 and "revoked" in tested.stderr
    (row,) = json.loads(grafient("integrations", "list", "--json").stdout)
    assert row["status"] == "error" and row["last_error"]
    assert_no_secret(tested.stderr + row["last_error"])


def test_remove_and_purge(settings):
    assert add(plan="pro").returncode == 0
    assert grafient("sync", "acme-prod").returncode == 0
    removed = grafient("integrations", "remove", "acme-prod", "--purge")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(grafient("integrations", "list", "--json").stdout) == []
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM fct_costs").fetchone() == (0,)


def test_cli_add_then_onboarding_sensor_backfill_lands_in_duckdb(settings, emulator):
    """The daemon's path: the CLI adds, the sensor asks for one backfill, the run lands it."""
    assert add(plan="free").returncode == 0
    instance = get_instance(settings)
    defs = build_definitions(settings)
    context = dg.build_sensor_context(
        instance=instance, resources={"registry": RegistryResource(home=str(settings.home))}
    )
    (request,) = defs.resolve_sensor_def("integrations_sensor").evaluate_tick(context).run_requests

    result = defs.resolve_job_def("openai_costs_job").execute_in_process(
        instance=instance, tags=request.tags
    )

    assert result.success
    today = utc_today()
    expected = emulator.expected_total(ORG_ID, today - timedelta(days=29), today)
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM rollup_token_type_daily").fetchone()
        (days,) = conn.execute(
            "SELECT count(DISTINCT bucket_start) FROM raw_openai_costs"
        ).fetchone()
    assert total == expected
    spend_days = emulator.expected_totals(ORG_ID, today - timedelta(days=29), today)
    assert days == sum(1 for amount in spend_days.values() if amount != 0) >= 20
    (row,) = json.loads(grafient("integrations", "list", "--json").stdout)
    assert row["status"] == "active" and row["last_synced_at"]


def test_add_without_a_daemon_backfills_in_process_and_the_sensor_converges(settings, emulator):
    added = grafient(
        "integrations", "add", "--label", "Acme", "--plan", "free", "--key-stdin",
        stdin=ADMIN_KEY + "\n",
    )  # fmt: skip

    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "acme"
    assert "acme" in added.stderr and "rows" in added.stderr
    today = utc_today()
    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        (total,) = conn.execute("SELECT sum(amount_usd) FROM rollup_model_daily").fetchone()
    assert total == emulator.expected_total(ORG_ID, today - timedelta(days=29), today)
    context = dg.build_sensor_context(
        instance=get_instance(settings),
        resources={"registry": RegistryResource(home=str(settings.home))},
    )
    sensor = build_definitions(settings).resolve_sensor_def("integrations_sensor")
    assert sensor.evaluate_tick(context).run_requests == []


def test_keys_rotate_re_encrypts_under_a_new_file_master_key(settings, monkeypatch):
    monkeypatch.delenv("GRAFIENT_MASTER_KEY")
    assert add(plan="pro").returncode == 0
    master_key = Path(settings.master_key_path)
    before = master_key.read_bytes()

    rotated = grafient("keys", "rotate")

    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 key" in rotated.stdout
    assert master_key.read_bytes() != before
    assert oct(master_key.stat().st_mode & 0o777) == "0o600"
    tested = grafient("integrations", "test", "acme-prod")
    assert tested.returncode == 0, tested.stderr
    assert_no_secret(rotated.stdout + rotated.stderr + tested.stdout)


def test_keys_rotate_with_an_env_master_key_says_how(settings):
    result = grafient("keys", "rotate")
    assert result.returncode == 1
    assert "GRAFIENT_MASTER_KEY_PREVIOUS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- issue 14: the CLI is the top floor, and its messages help -------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "grafient_pipeline"


def call(capsys, monkeypatch, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`grafient ARGS` through its entry point, in this process; argparse's exit counts."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # the CLI sets it; restore
    return settings


def test_item20_nothing_imports_from_the_cli():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name == "grafient_pipeline.cli" for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []


def test_item7_tables_and_summaries_round_money_for_people(env, capsys, monkeypatch):
    from grafient_pipeline.console import describe_sync

    query = (
        "SELECT 'a' AS name, 118.2297531511144262::DECIMAL(38,16) AS usd, "
        "0::DECIMAL(38,16) AS zero, 1234567.891::DECIMAL(38,16) AS big"
    )
    code, out, err = call(capsys, monkeypatch, "sql", query)
    assert code == 0, err
    row = out.splitlines()[2].split()
    assert row == ["a", "118.23", "0.00", "1,234,567.89"]
    assert "0E-16" not in out and "--csv" in out
    code, out, _ = call(capsys, monkeypatch, "sql", query, "--csv")
    assert out.splitlines()[1] == "a,118.2297531511144262,0E-16,1234567.8910000000000000"

    summary = SyncSummary(
        Slice("acme", DateRange(date(2026, 11, 1), date(2026, 11, 2))), "run-1", "in-process",
        0, Decimal("0E-16"), 1078, Decimal("18834.7231511144262"),
    )  # fmt: skip
    line = describe_sync(summary)
    assert "1,078 rows, 18,834.72 USD (was 0 rows, 0.00 USD; change +18,834.72)" in line


def test_item8_key_hints_survive_the_scrubber_and_keys_do_not(env, registry):
    from grafient_pipeline.redact import scrub

    hints = [
        "use an admin key (sk-admin-...); an Organization Owner creates one",
        "OpenAI rejected the admin key sk-admin-...rong (401 invalid_api_key)",
        "This is a project or user API key (sk-proj-...wxyz), which cannot read costs",
        "keys start with sk-admin-",
    ]
    for hint in hints:
        assert scrub(hint) == hint
    for key in (ADMIN_KEY, "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "sk-0123456789abcd"):
        assert scrub(f"the key {key} failed") == "the key sk-*** failed"
    registry.add("Acme", "free", ADMIN_KEY)
    registry.set_status("acme", "error", f"{hints[1]}; the key was {ADMIN_KEY}")
    stored = registry.get("acme").last_error
    assert stored == f"{hints[1]}; the key was sk-***"


def test_item8_the_cli_keeps_the_admin_key_hint(env, emulator, capsys, monkeypatch):
    args = ("integrations", "add", "--plan", "free", "--no-backfill", "--key-stdin")
    project_key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    code, _, err = call(capsys, monkeypatch, *args, stdin=project_key + "\n")
    assert code == 1
    assert "(sk-proj-...6789)" in err and "use an admin key (sk-admin-...)" in err
    assert "sk-***..." not in err
    code, _, err = call(capsys, monkeypatch, *args, stdin="sk-admin-" + "w" * 36 + "rong\n")
    assert code == 1 and "OpenAI rejected the admin key sk-admin-...rong" in err
    assert_no_secret(err)


def test_item9_plans_in_any_case(env, emulator, capsys, monkeypatch):
    code, out, err = call(
        capsys, monkeypatch, "integrations", "add", "--label", "Acme Prod", "--plan", "Pro",
        "--no-backfill", "--key-stdin", stdin=ADMIN_KEY + "\n",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "acme-prod"
    code, out, err = call(capsys, monkeypatch, "integrations", "set-plan", "acme-prod", "ULTIMATE")
    assert code == 0, err
    assert out.strip() == "acme-prod: plan ultimate"
    code, _, err = call(capsys, monkeypatch, "integrations", "set-plan", "acme-prod", "Gold")
    assert code == 2 and "invalid choice" in err


def test_item10_a_future_start_says_it_is_in_the_future(env, emulator, registry, capsys,
                                                        monkeypatch):  # fmt: skip
    registry.add("Acme", "pro", ADMIN_KEY)
    future = (utc_today() + timedelta(days=5)).isoformat()
    before = emulator.request_count

    code, _, err = call(capsys, monkeypatch, "sync", "acme", "--start", future)

    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"{future} is in the future" in err and utc_today().isoformat() in err
    assert "ends before it starts" not in err
    assert emulator.request_count == before


def test_item11_add_without_a_terminal_says_to_pipe_the_key(env):
    """No controlling terminal (a new session) and stdin not a terminal: one clear line."""
    done = subprocess.run(
        [sys.executable, "-m", "grafient_pipeline.cli", "integrations", "add", "--plan", "free"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("grafient: error: no terminal to read the key from")
    assert "--key-stdin" in line


def test_item11_empty_sql_is_one_clear_line(env, capsys, monkeypatch):
    for query in ("", "   "):
        code, out, err = call(capsys, monkeypatch, "sql", query)
        assert code == 1 and out == ""
        assert err.strip().splitlines() == [
            'grafient: error: no SQL given: for example grafient sql "SELECT 1"'
        ]
    code, out, err = call(capsys, monkeypatch, "sql", "-- only a comment")
    assert code == 0 and err == "" and "(0 rows)" in out


def test_item11_a_closed_pipe_ends_quietly_like_unix_tools(env):
    """`grafient sql ... | head -1`: no message, SIGPIPE's exit status, as `seq | head` gives."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "grafient_pipeline.cli", "sql",
         "SELECT range AS n, 'row ' || range AS text FROM range(200000)", "--csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().rstrip() == b"n,text"
    reader.stdout.close()
    code = reader.wait(timeout=120)
    assert reader.stderr.read() == b""
    assert code == 128 + signal.SIGPIPE


def test_item12_an_id_with_a_trailing_newline_is_not_an_id(env, registry, capsys, monkeypatch):
    registry.add("Acme", "free", ADMIN_KEY)
    with pytest.raises(IntegrationNotFound, match="not an integration id"):
        registry.get("acme\n")
    for args in (("integrations", "test", "acme\n"), ("sync", "acme\n")):
        code, out, err = call(capsys, monkeypatch, *args)
        assert code == 1 and out == ""
        assert "not an integration id" in err and "acme" not in err


def _parsers(parser: argparse.ArgumentParser, path: str = "grafient"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_item13_help_describes_everything_with_an_example_per_command():
    root = cli.build_parser()
    for path, parser in _parsers(root):
        for action in parser._actions:
            name = action.dest if not action.option_strings else action.option_strings[-1]
            assert action.help and action.help.strip(), f"{path}: {name} has no help"
        if parser is not root:
            assert parser.epilog and f"\n  {path}" in f"\n{parser.epilog}", path
            assert parser.description, path
    top = root.format_help()
    for variable in (
        "GRAFIENT_HOME", "GRAFIENT_MASTER_KEY", "GRAFIENT_OPENAI_BASE_URL", "GRAFIENT_WAREHOUSE",
        "GRAFIENT_RESYNC_DAYS", "GRAFIENT_SYNC_BATCH", "GRAFIENT_DAGSTER_URL",
    ):  # fmt: skip
        assert variable in top
    assert "example" in top
