"""Issue 9, hostile input through the CLI: labels and ids with quotes, SQL metacharacters,
control characters, unicode and extreme lengths are either refused with one clear line (exit 1,
no traceback) or stored safely and read back identical -- in the registry, in `integrations
list`, and in the warehouse's dim_integrations after a sync.

Most cases call the CLI's entry point in-process (same code path, no interpreter start-up);
a few go through a real process to check exit codes and stderr as a shell sees them.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from grafient_pipeline import cli
from grafient_pipeline.providers.openai.emulator import CostsEmulator
from grafient_pipeline.settings import Settings
from grafient_pipeline.sync import utc_today
from tests.conftest import ADMIN_KEY, OTHER_KEY, run_cli

README = Path(__file__).resolve().parent.parent / "README.md"

STORED_AS_IS = [
    'O\'Brien "Prod"',
    "x'); DROP TABLE integrations; --",
    "Robert'); DELETE FROM raw_openai_costs WHERE ('1'='1",
    "%s %d {0} {label} $integration_id ?",
    "back\\slash; `tick` | pipe , comma",
    "Ünïcødé 東京 Ελλάδα العربية",
    "rocket 🚀 family 👨‍👩‍👧 flag 🇺🇳",
    "null\u200bwidth\ufeffbom",
    "\u202eright-to-left override",
    "<script>alert(1)</script> &amp;",
    "L" * 100,
    "🚀" * 100,
]
REFUSED = {
    "newline": ("line one\nline two", "control characters"),
    "carriage return": ("a\rb", "control characters"),
    "tab": ("a\tb", "control characters"),
    "escape sequence": ("\x1b[31mred\x1b[0m", "control characters"),
    "bell": ("ding\x07", "control characters"),
    "line separator": ("a\u2028b", "control characters"),
    "101 characters": ("L" * 101, "limit is 100"),
    "10k characters": ("x" * 10_000, "limit is 100"),
    "combining marks": ("e\u0301" * 51, "limit is 100"),
}
BAD_IDS = [
    "x'; DROP TABLE integrations; --",
    "acme|prod",
    "acme,prod",
    "ACME-PROD",
    "../../etc/passwd",
    "a" * 5000,
    "id\nsecond line",
    "東京",
    "",
]


def call(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
         stdin: str = "") -> tuple[int, str, str]:  # fmt: skip
    """`grafient ARGS` through its entry point; argparse's own exit (2) counts as a refusal."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys, monkeypatch, label: str, plan: str = "free", key: str = ADMIN_KEY):
    return call(capsys, monkeypatch, "integrations", "add", "--label", label, "--plan", plan,
                "--no-backfill", "--key-stdin", stdin=key + "\n")  # fmt: skip


def assert_one_line_refusal(code: int, err: str, *phrases: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # the CLI sets it; restore
    return settings


def listed(capsys, monkeypatch) -> dict[str, dict]:
    code, out, _ = call(capsys, monkeypatch, "integrations", "list", "--json")
    assert code == 0
    return {row["label"]: row for row in json.loads(out)}


def test_hostile_labels_are_stored_verbatim_and_read_back_identical(env, capsys,
                                                                    monkeypatch):  # fmt: skip
    keys = {f"org-hostile-{n}": f"sk-admin-hostile-{n:04d}-{'k' * 40}" for n in range(40)}
    assert len(keys) >= len(STORED_AS_IS)  # one organization each: an org is connected once
    ids = {}
    with CostsEmulator(keys, seed=3) as own:
        monkeypatch.setenv("GRAFIENT_OPENAI_BASE_URL", own.base_url)
        for label, key in zip(STORED_AS_IS, keys.values(), strict=False):
            code, out, err = add(capsys, monkeypatch, label, key=key)
            assert code == 0, (label, err)
            ids[label] = out.strip()
    rows = listed(capsys, monkeypatch)
    assert set(rows) == set(STORED_AS_IS)  # byte-for-byte: no escaping, trimming or folding
    for label, integration_id in ids.items():
        assert rows[label]["id"] == integration_id
        assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in integration_id)
        assert 1 <= len(integration_id) <= 64
    assert len(set(ids.values())) == len(ids)
    code, out, _ = call(capsys, monkeypatch, "integrations", "list")
    assert code == 0 and "x'); DROP TABLE integrations; --" in out


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_labels_are_refused_in_one_line(env, emulator, capsys, monkeypatch, case):
    label, phrase = REFUSED[case]
    code, out, err = add(capsys, monkeypatch, label)
    assert_one_line_refusal(code, err, "grafient: error:", phrase)
    assert not any(ord(c) < 32 or c == "\x7f" for c in err.strip())  # nothing echoed raw
    assert out == ""
    assert listed(capsys, monkeypatch) == {}


def test_unicode_lookalike_and_case_duplicates_are_refused(env, emulator, capsys, monkeypatch):
    assert add(capsys, monkeypatch, "Café Prod")[0] == 0
    for same in ("Cafe\u0301 Prod", "CAFÉ PROD", "café prod"):  # NFD form, upper, lower
        code, _, err = add(capsys, monkeypatch, same, "pro", OTHER_KEY)
        assert_one_line_refusal(code, err, "already exists")
    assert add(capsys, monkeypatch, "  Padded  ", key=OTHER_KEY)[0] == 0
    assert "Padded" in listed(capsys, monkeypatch)  # outer blanks trimmed, nothing else
    assert call(capsys, monkeypatch, "integrations", "remove", "cafe-prod")[0] == 0
    code, out, _ = add(capsys, monkeypatch, "")
    assert code == 0 and out.strip()  # a blank label gets a generated one


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_hostile_ids_are_refused_in_one_line_without_echo(env, capsys, monkeypatch, bad_id):
    for args in (
        ("integrations", "test", bad_id),
        ("integrations", "remove", bad_id),
        ("integrations", "set-plan", bad_id, "pro"),
        ("sync", bad_id),
        ("backfill", bad_id),
    ):
        code, out, err = call(capsys, monkeypatch, *args)
        assert_one_line_refusal(code, err, "grafient: error:")
        assert out == ""
        if len(bad_id) > 3:
            assert bad_id not in err  # never reflected back (terminal escapes, huge echoes)


@pytest.mark.parametrize(
    ("start", "end", "phrase"),
    [
        ("2025-01-01'; DROP TABLE fct_costs; --", None, "bad date"),
        ("2025-02-30", None, "bad date"),
        ("yesterday", None, "bad date"),
        (None, "9999-12-31", "in the future"),
        ("2000-01-01", None, "free plan"),
        ("TODAY", "TODAY-2", "ends before it starts"),
    ],
)
def test_hostile_dates_are_refused_before_any_request(env, emulator, registry, capsys,
                                                      monkeypatch, start, end, phrase):  # fmt: skip
    registry.add("Dated", "free", ADMIN_KEY)
    today = utc_today()

    def resolve(text: str | None) -> list[str]:
        if text is None:
            return []
        if text.startswith("TODAY"):
            return [(today - timedelta(days=int(text[6:] or 0))).isoformat()]
        return [text]

    args = ["sync", "dated"]
    args += ["--start", *resolve(start)] if start else []
    args += ["--end", *resolve(end)] if end else []
    before = emulator.request_count
    code, _, err = call(capsys, monkeypatch, *args)
    assert_one_line_refusal(code, err, "grafient: error:", phrase)
    assert emulator.request_count == before


grafient = run_cli


def test_hostile_label_survives_a_sync_into_the_warehouse(env, emulator):
    label = 'Robert\'); DELETE FROM dim_integrations; -- 東京 🚀 "q"'
    added = grafient("integrations", "add", "--label", label, "--plan", "pro", "--no-backfill",
                     "--key-stdin", stdin=ADMIN_KEY + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    integration_id = added.stdout.strip()
    day = (utc_today() - timedelta(days=1)).isoformat()
    synced = grafient("sync", integration_id, "--start", day, "--end", day)
    assert synced.returncode == 0, synced.stderr
    with duckdb.connect(env.warehouse, read_only=True) as conn:
        rows = conn.execute("SELECT integration_id, label FROM dim_integrations").fetchall()
        found = conn.sql("SELECT table_name FROM information_schema.tables").fetchall()
        tables = {name for (name,) in found}
    assert rows == [(integration_id, label)]
    assert {"dim_integrations", "raw_openai_costs", "fct_costs"} <= tables
    queried = grafient("sql", "SELECT label FROM dim_integrations", "--csv")
    assert queried.returncode == 0
    assert list(csv.reader(io.StringIO(queried.stdout))) == [["label"], [label]]


def test_real_process_refusal_is_one_line_with_exit_1(env):
    """As a shell sees it: the label with an escape sequence is refused, nothing printed raw."""
    done = grafient("integrations", "add", "--label", "evil\x1b]0;pwned\x07", "--plan", "free",
                    "--no-backfill", "--key-stdin", stdin=ADMIN_KEY + "\n")  # fmt: skip
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert done.stdout == ""


def test_sql_is_documented_as_a_trusted_operator_tool():
    text = README.read_text(encoding="utf-8")
    sql_rows = [line for line in text.splitlines() if "grafient sql" in line]
    assert any("trusted-operator" in line or "trusted operator" in line for line in sql_rows)
    security = text[text.index("## Security") :]
    assert "trusted operators" in security[: security.index("\n## ", 1)]
    help_text = cli.build_parser().format_help()
    assert "trusted operators only" in help_text
