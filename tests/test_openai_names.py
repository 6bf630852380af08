"""OpenAI's names: projects and each project's API keys, from the client and the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

import httpx
import pytest

from grafient_pipeline.providers.base import PermissionDeniedError
from grafient_pipeline.providers.openai import client as client_module
from grafient_pipeline.providers.openai.client import CostsClient
from grafient_pipeline.providers.openai.emulator import CostsEmulator

ORG = "org-names"
KEY = "sk-admin-names-0123456789abcdefghijklmnop"
NOW = datetime(2026, 5, 10, 13, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def emu() -> Iterator[CostsEmulator]:
    with CostsEmulator({ORG: KEY}, seed=5, results_per_day=60, now=lambda: NOW) as running:
        yield running


def test_projects_and_keys_name_every_id_of_the_cost_data(emu: CostsEmulator) -> None:
    with CostsClient(KEY, emu.base_url) as c:
        projects = list(c.iter_projects())
        keys = list(c.iter_api_keys())
        spent = [r for b in c.iter_buckets(date(2026, 4, 1), date(2026, 4, 30)) for r in b.results]
    assert {p.kind for p in projects} == {"project"} and {k.kind for k in keys} == {"api_key"}
    assert {r.project_id for r in spent} <= {p.id for p in projects}
    assert {r.api_key_id for r in spent} <= {k.id for k in keys}
    assert {p.status for p in projects} == {"active", "archived"}
    assert all(p.name for p in projects) and all(k.name and k.owner for k in keys)
    by_id = {p.id: p for p in projects}
    assert all(k.project_id in by_id for k in keys)
    assert all(k.redacted_value and "****" in k.redacted_value for k in keys)


def test_names_are_deterministic(emu: CostsEmulator) -> None:
    with CostsClient(KEY, emu.base_url) as c:
        first = list(c.iter_api_keys())
    with CostsEmulator({ORG: KEY}, seed=5, results_per_day=60) as again:
        c = CostsClient(KEY, again.base_url)
        assert list(c.iter_api_keys()) == first
        c.close()


def test_names_follow_pages(emu: CostsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "NAMES_PAGE_SIZE", 1)
    with CostsClient(KEY, emu.base_url) as c:
        projects = list(c.iter_projects())
        requests = c.request_count
    assert requests == len(projects) and len(projects) >= 3
    listed = httpx.get(
        f"{emu.base_url}/organization/projects", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    assert listed["object"] == "list" and len(listed["data"]) == len(projects) - 1  # archived


def test_names_403_is_a_permission_error_without_retries() -> None:
    sleeps: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "Missing scopes: api.management.read", "code": None}}
        return httpx.Response(403, content=json.dumps(body), headers={"x-request-id": "req_n"})

    transport = httpx.MockTransport(answer)
    c = CostsClient(KEY, transport=transport, sleep=sleeps.append)
    with c, pytest.raises(PermissionDeniedError) as info:
        list(c.iter_projects())
    assert "projects" in str(info.value) and "costs still sync" in str(info.value)
    assert "req_n" in str(info.value) and KEY not in str(info.value) and sleeps == []


def test_emulator_names_errors(emu: CostsEmulator) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    unknown = httpx.get(f"{emu.base_url}/organization/projects/proj_nope/api_keys", headers=auth)
    assert unknown.status_code == 404
    project_key = {"Authorization": "Bearer sk-proj-abcdefghijklmnop"}
    denied = httpx.get(f"{emu.base_url}/organization/projects", headers=project_key)
    assert denied.status_code == 403
    bad_limit = httpx.get(f"{emu.base_url}/organization/projects?limit=101", headers=auth)
    assert bad_limit.status_code == 400
