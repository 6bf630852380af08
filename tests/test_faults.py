"""Issue 9: API faults through real pipeline runs (emulator over HTTP -> 4 assets -> DuckDB).

Every run either completes with the emulator's exact totals after retries, or fails with one
clear error; the warehouse never holds a partial day or a duplicate row, and a failed run leaves
the slice's previous data exactly as it was (rows, run ids and fetch times included).

One warehouse is loaded once per module; each success case first restates a day in the
emulator, so only a run that really replaced the slice passes. The client's retry waits are
recorded instead of slept (the real client, constructed by the real resource, with ``sleep``
injected), so the cases stay fast while checking what the client asked to wait.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gc
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from grafient_pipeline.providers import PROVIDERS
from grafient_pipeline.providers.openai.client import INITIAL_BACKOFF, MAX_BACKOFF, CostsClient
from grafient_pipeline.providers.openai.emulator import CostsEmulator, Faults
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings, load_settings
from tests.conftest import ADMIN_KEY, ORG_ID, last_days, run_range
from tests.test_idempotency import (
    assert_exact,
    assert_no_key,
    failure_message,
    materialized_steps,
    snapshot,
    warehouse,
)

DATES = last_days(3)
PAGE_SIZE = 2  # 3 days -> two pages, so faults also hit pagination and multi-bucket pages
TIMEOUT = 1.0
SLOW = 2.5


@dataclass
class World:
    emulator: CostsEmulator
    settings: Settings
    registry: Registry
    instance: dg.DagsterInstance
    integration_id: str
    waits: list[float] = field(default_factory=list)
    on_wait: Callable[[int], None] | None = None  # runs at the client's n-th wait
    timeout: float = 60.0  # the client's default; the timeout cases shorten it
    restatements: Iterator[Decimal] = field(
        default_factory=lambda: (Decimal(f"1.{n:02d}") for n in itertools.count(7, 7))
    )

    def run(self) -> dg.ExecuteInProcessResult:
        self.waits.clear()
        result = run_range(self.settings, self.instance, self.integration_id, DATES)
        # dagster_duckdb's get_connection() does not close its connection when the body raises
        # (no try/finally), so a failed load leaves a read-write connection to the file open in
        # this process until it is garbage collected; collect it before the next check reads.
        gc.collect()
        return result

    def sleep(self, seconds: float) -> None:
        """What the client calls instead of time.sleep: record, maybe change faults, return."""
        self.waits.append(seconds)
        if self.on_wait is not None:
            self.on_wait(len(self.waits))

    def restate(self) -> None:
        """Change the API's past days, so only a run that replaced the slice can pass."""
        factor = next(self.restatements)
        for day in DATES.dates():
            self.emulator.restate_day(ORG_ID, day, factor)

    def staged_files(self) -> list[Path]:
        folder = self.settings.staging_dir
        return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    patch = pytest.MonkeyPatch()
    emulator = CostsEmulator({ORG_ID: ADMIN_KEY}, seed=23, results_per_day=30).start()
    try:
        home = tmp_path_factory.mktemp("faults") / "home"
        patch.setenv("GRAFIENT_HOME", str(home))
        patch.setenv("GRAFIENT_OPENAI_BASE_URL", emulator.base_url)
        patch.setenv("GRAFIENT_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
        patch.delenv("GRAFIENT_WAREHOUSE", raising=False)
        patch.setenv("GRAFIENT_DAGSTER_URL", "http://127.0.0.1:9")
        settings = load_settings()
        registry = Registry.from_settings(settings)
        integration = registry.add("Faulty Org", "pro", ADMIN_KEY, organization_id=ORG_ID)
        with dg.instance_for_test() as instance:
            world = World(emulator, settings, registry, instance, integration.id)
            baseline = world.run()
            assert baseline.success, failure_message(baseline)
            yield world
    finally:
        emulator.stop()
        patch.undo()


@pytest.fixture
def w(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The module's world with clean faults, and runs whose client records its waits."""
    world.emulator.faults = Faults()
    world.on_wait = None
    world.timeout = 60.0

    def client(api_key: str, base_url: str, **kwargs: object) -> CostsClient:
        kwargs.update(page_size=PAGE_SIZE, timeout=world.timeout, sleep=world.sleep)
        return CostsClient(api_key, base_url, **kwargs)  # type: ignore[arg-type]

    use_client(monkeypatch, client)
    yield world
    world.emulator.faults = Faults()
    world.on_wait = None
    world.timeout = 60.0


def use_client(monkeypatch: pytest.MonkeyPatch, client: object) -> None:
    """Runs build OpenAI clients with ``client`` (the provider record is what they use)."""
    openai = dataclasses.replace(PROVIDERS["openai"], client=client)
    monkeypatch.setitem(PROVIDERS, "openai", openai)


def assert_replaced_exactly(w: World, result: dg.ExecuteInProcessResult) -> None:
    assert result.success, failure_message(result)
    assert_exact(w.settings, w.emulator, w.integration_id, ORG_ID, DATES.start, DATES.end)
    assert w.registry.get(w.integration_id).status == "active"
    assert w.staged_files() == []


def assert_failed_cleanly(w: World, result: dg.ExecuteInProcessResult, before: dict,
                          *phrases: str) -> str:  # fmt: skip
    assert not result.success
    message = failure_message(result)
    first_line = message.splitlines()[0]
    assert first_line.startswith(f"{w.integration_id}: "), message
    for phrase in phrases:
        assert phrase in first_line, (phrase, first_line)
    assert "Traceback" not in first_line
    assert_no_key(message, ADMIN_KEY)
    assert materialized_steps(result) == set()  # nothing downstream ran on a failed fetch
    assert snapshot(w.settings, volatile=True) == before  # the slice's previous data, untouched
    row = w.registry.get(w.integration_id)
    assert row.status == "error" and row.last_error
    assert phrases[0] in row.last_error
    assert w.staged_files() == []  # the partial staging file was discarded
    return first_line


# ----------------------------------------------------------------------------- recoveries


def test_429_storm_with_retry_after_recovers(w: World):
    w.restate()
    w.emulator.faults.retry_after = "0"
    w.emulator.faults.rate_limit_first = 4
    result = w.run()
    assert_replaced_exactly(w, result)
    assert w.waits == [0.0] * 4  # Retry-After honoured, no extra backoff


def test_429_storm_without_retry_after_backs_off_and_recovers(w: World):
    w.restate()
    w.emulator.faults.retry_after = None
    w.emulator.faults.rate_limit_first = 4
    result = w.run()
    assert_replaced_exactly(w, result)
    ceilings = [min(MAX_BACKOFF, INITIAL_BACKOFF * 2**n) for n in range(4)]
    assert len(w.waits) == 4
    assert all(0 <= wait <= cap for wait, cap in zip(w.waits, ceilings, strict=True))


def test_500_502_503_burst_recovers(w: World):
    w.restate()
    statuses = {1: 502, 2: 503}
    w.on_wait = lambda n: setattr(w.emulator.faults, "server_error_status", statuses.get(n, 500))
    w.emulator.faults.server_error_status = 500
    w.emulator.faults.server_error_first = 3  # 500, then a Cloudflare 502 page, then 503
    result = w.run()
    assert_replaced_exactly(w, result)
    assert len(w.waits) == 3


def test_timeout_then_recovery(w: World):
    w.restate()
    w.on_wait = lambda n: setattr(w.emulator.faults, "slow_seconds", 0.0)
    w.timeout = TIMEOUT
    w.emulator.faults.slow_seconds = SLOW  # longer than the client's timeout
    result = w.run()
    assert_replaced_exactly(w, result)
    assert len(w.waits) >= 1


def test_connection_dropped_mid_body_recovers_without_duplicates(w: World):
    w.restate()
    w.emulator.faults.truncated_first = 2  # headers, half the body, then the socket closes
    result = w.run()
    assert_replaced_exactly(w, result)  # includes: no duplicate rows, no partial day
    assert len(w.waits) == 2


def test_legacy_shape_loads_exact_totals(w: World):
    """Old API shape: no api_key_id/quantity, amounts summed over keys."""
    w.restate()
    w.emulator.faults.legacy_shape = True
    result = w.run()
    assert_replaced_exactly(w, result)


# ----------------------------------------------------------------------------- clean failures


def _failure_cases() -> dict[str, tuple[dict[str, object], tuple[str, ...], list | None]]:
    """case -> (emulator fault switches, phrases of the one error, the waits asked for)."""
    return {
        "429 storm, Retry-After 1": (
            {"retry_after": "1", "rate_limit_first": 100},
            ("kept rate-limiting", "429", "after 6 attempts"),
            [1.0] * 5,  # the server's Retry-After, five times, then it gives up
        ),
        "429 storm, no Retry-After": (
            {"retry_after": None, "rate_limit_first": 100},
            ("kept rate-limiting", "429", "after 6 attempts"),
            None,
        ),
        "503 storm": (
            {"server_error_status": 503, "server_error_first": 100},
            ("kept failing", "HTTP 503", "after 6 attempts"),
            None,
        ),
        "502 HTML storm": (
            {"server_error_status": 502, "server_error_first": 100},
            ("kept failing", "HTTP 502", "after 6 attempts"),
            None,
        ),
        "timeouts": (
            {"slow_seconds": SLOW},
            ("Could not get a complete response", "Timeout", "after 3 attempts"),
            None,
        ),
        "connection always dropped mid-body": (
            {"truncated_first": 100},
            ("Could not get a complete response", "after 6 attempts"),
            None,
        ),
        "malformed JSON": (
            {"malformed_first": 1},
            ("cannot be read", "not valid JSON"),
            [],  # a body that is not JSON is not retried
        ),
    }


FAILURES = _failure_cases()


@pytest.mark.parametrize("case", list(FAILURES))
def test_persistent_fault_fails_once_clearly_and_keeps_previous_data(
    w: World, monkeypatch: pytest.MonkeyPatch, case: str
):
    switches, phrases, waits = FAILURES[case]
    if case == "timeouts":  # three slow attempts are enough to show the give-up path
        w.timeout = TIMEOUT
        use_client(monkeypatch, functools.partial(PROVIDERS["openai"].client, max_attempts=3))
    before = snapshot(w.settings, volatile=True)
    w.restate()  # the API now has other data: a partial write would show
    for name, value in switches.items():
        setattr(w.emulator.faults, name, value)

    result = w.run()

    assert_failed_cleanly(w, result, before, *phrases)
    if waits is not None:
        assert w.waits == waits


def rewrite_bodies(w: World, monkeypatch: pytest.MonkeyPatch, edit: Callable[[bytes], bytes]):
    """Make the emulator's 200 answers go out as ``edit(body)`` (sent with its real length)."""
    real = w.emulator.handle

    def handle(method: str, target: str, authorization: str | None):
        response = real(method, target, authorization)
        if response.status == 200:
            response.chunks = [edit(b"".join(response.chunks))]
        return response

    monkeypatch.setattr(w.emulator, "handle", handle)


FIRST_AMOUNT = re.compile(rb'("value":)(-?[0-9][0-9.eE+-]*)')


def test_truncated_json_in_a_complete_response_fails_cleanly(
    w: World, monkeypatch: pytest.MonkeyPatch
):
    """A 200 whose (correctly sized) body stops mid-JSON, after some buckets parsed."""
    before = snapshot(w.settings, volatile=True)
    w.restate()
    rewrite_bodies(w, monkeypatch, lambda body: body[: len(body) * 3 // 4])
    result = w.run()
    assert_failed_cleanly(w, result, before, "cannot be read")


def test_out_of_range_amount_never_half_loads(w: World, monkeypatch: pytest.MonkeyPatch):
    """An amount DECIMAL(38,16) cannot hold (1e400): the run fails, nothing is half written."""
    before = snapshot(w.settings, volatile=True)
    w.restate()
    rewrite_bodies(w, monkeypatch, lambda body: FIRST_AMOUNT.sub(rb"\g<1>1e400", body, count=1))
    result = w.run()
    assert not result.success
    assert snapshot(w.settings, volatile=True) == before
    assert w.staged_files() == []


def test_out_of_range_amount_fails_with_one_clear_error(w: World, monkeypatch: pytest.MonkeyPatch):
    before = snapshot(w.settings, volatile=True)
    w.restate()
    rewrite_bodies(w, monkeypatch, lambda body: FIRST_AMOUNT.sub(rb"\g<1>1e400", body, count=1))
    result = w.run()
    assert_failed_cleanly(w, result, before, "cannot be read")


def test_amount_beyond_16_decimals_is_never_silently_rounded(
    w: World, monkeypatch: pytest.MonkeyPatch
):
    before = snapshot(w.settings, volatile=True)
    w.restate()
    edit = lambda body: FIRST_AMOUNT.sub(rb"\g<1>0.00000000000000001", body, count=1)  # noqa: E731
    rewrite_bodies(w, monkeypatch, edit)
    result = w.run()
    if not result.success:
        assert_failed_cleanly(w, result, before, "cannot be read")
        return
    with warehouse(w.settings) as conn:
        rows = conn.execute("SELECT amount_value, raw_json FROM raw_openai_costs").fetchall()
    for stored, raw in rows:
        assert stored == json.loads(raw, parse_float=Decimal)["amount"]["value"], raw


def test_crlf_whitespace_in_a_response_loads(w: World, monkeypatch: pytest.MonkeyPatch):
    w.restate()
    rewrite_bodies(
        w, monkeypatch, lambda body: body.replace(b',"line_item"', b',\r\n  "line_item"')
    )
    assert_replaced_exactly(w, w.run())


def test_cli_reports_a_persistent_fault_in_one_line(w: World):
    """The same failure as a user sees it: `grafient sync` exits 1 with one line, no trace."""
    before = snapshot(w.settings, volatile=True)
    w.emulator.faults.retry_after = "0"
    w.emulator.faults.rate_limit_first = 100
    env = dict(os.environ, DAGSTER_HOME=str(w.settings.dagster_home))
    done = subprocess.run(
        [sys.executable, "-m", "grafient_pipeline.cli", "sync", w.integration_id,
         "--start", DATES.start.isoformat(), "--end", DATES.end.isoformat()],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("grafient: error: sync of ")
    assert w.integration_id in lines[0] and "kept rate-limiting" in lines[0]
    assert "dagster._core" not in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert_no_key(done.stdout + done.stderr, ADMIN_KEY)
    assert snapshot(w.settings, volatile=True) == before


def test_after_all_faults_a_clean_run_heals_everything(w: World):
    """After every failure above (each left the old data, while the API moved on): one clean
    run brings the slice to the API's exact current totals, with no duplicates."""
    assert_replaced_exactly(w, w.run())
