"""Issue 17: who may use the dashboard and what it never shows.

Loopback only unless GRAFIENT_DASHBOARD_TOKEN is set; then a login form and a session cookie
(HttpOnly, SameSite=Strict); CSRF and Origin on every POST; security headers on every answer;
labels and errors escaped; the admin key in no response, header or log line.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from grafient_pipeline.dashboard.app import create_app
from grafient_pipeline.dashboard.security import StartRefused, check_bind, is_loopback
from grafient_pipeline.registry import Registry
from grafient_pipeline.settings import Settings
from grafient_pipeline.snapshot import publish_snapshot
from tests.conftest import ADMIN_KEY, OTHER_KEY, run_cli
from tests.test_dashboard import FakeJobs, csrf_of
from tests.test_hostile_input import STORED_AS_IS
from tests.test_report import build_warehouse

TOKEN = "correct-horse-battery-staple-0123456789"
POSTS = [
    "/integrations",
    "/integrations/acme/sync",
    "/integrations/acme/backfill",
    "/integrations/acme/test",
    "/integrations/acme/plan",
    "/integrations/acme/remove",
    "/api/test-key",
    "/api/integrations/acme/sync",
    "/api/integrations/acme/test",
]


@pytest.fixture
def home(settings: Settings) -> Settings:
    settings.home.mkdir(parents=True, exist_ok=True)
    build_warehouse(Path(settings.warehouse))
    publish_snapshot(settings.warehouse, settings.snapshot_path)
    return settings


@pytest.fixture
def client(home: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home, jobs=FakeJobs())) as test_client:
        yield test_client


@pytest.fixture
def guarded(home: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home, token=TOKEN, jobs=FakeJobs())) as test_client:
        yield test_client


# --- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_other_addresses_need_a_token(host: str):
    with pytest.raises(StartRefused, match="GRAFIENT_DASHBOARD_TOKEN"):
        check_bind(host, None)
    check_bind(host, TOKEN)
    with pytest.raises(StartRefused, match="shorter than 16"):
        check_bind(host, "short")


def test_the_command_refuses_in_one_line(home: Settings):
    env = {k: v for k, v in __import__("os").environ.items() if k != "GRAFIENT_DASHBOARD_TOKEN"}
    done = run_cli("dashboard", "--host", "0.0.0.0", "--port", "1", env=env, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0], done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_command_serves_and_stops(home: Settings):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "grafient_pipeline.cli", "dashboard", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert answer.json() == {"ok": True}
        taken = run_cli("dashboard", "--port", str(port), timeout=60)
        assert taken.returncode == 1 and "pass --port" in taken.stderr
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in out and "Traceback" not in err


# --- login ------------------------------------------------------------------------------------


def test_with_a_token_every_page_and_api_asks_for_login(guarded: TestClient):
    assert guarded.get("/", follow_redirects=False).headers["location"] == "/login"
    assert guarded.get("/integrations", follow_redirects=False).status_code == 303
    for path in ("/api/summary", "/api/integrations", "/api/jobs"):
        assert guarded.get(path).status_code == 401
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/static/app.css").status_code == 200


def test_login_opens_a_new_strict_http_only_session(guarded: TestClient):
    csrf = csrf_of(guarded, "/login")
    first = guarded.cookies.get("grafient_session")
    wrong = guarded.post("/login", data={"csrf_token": csrf, "token": "nope" * 8})
    assert "not the dashboard token" in wrong.text
    assert guarded.get("/api/summary").status_code == 401

    response = guarded.post(
        "/login", data={"csrf_token": csrf, "token": TOKEN}, follow_redirects=False
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert guarded.cookies.get("grafient_session") != first  # a new id after login
    assert guarded.get("/api/summary").status_code == 200
    assert TOKEN not in guarded.get("/").text

    guarded.post("/logout", data={"csrf_token": csrf_of(guarded, "/")})
    assert guarded.get("/api/summary").status_code == 401


def test_login_without_csrf_is_refused(guarded: TestClient):
    guarded.get("/login")
    assert guarded.post("/login", data={"token": TOKEN}).status_code == 403


# --- CSRF, origin, headers ------------------------------------------------------------------


@pytest.mark.parametrize("path", POSTS)
def test_posts_without_the_csrf_token_are_refused(client: TestClient, path: str):
    client.get("/")
    response = client.post(path, data={"plan": "pro", "confirm": "acme", "key": ADMIN_KEY})
    assert response.status_code == 403
    wrong = client.post(path, data={"csrf_token": "forged"}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    assert ADMIN_KEY not in response.text


def test_a_cross_site_origin_is_refused(client: TestClient):
    csrf = csrf_of(client)
    response = client.post(
        "/integrations/acme/sync",
        data={"csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    same = client.post(
        "/integrations/acme/sync",
        data={"csrf_token": csrf},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert same.status_code in (303, 404)


@pytest.mark.parametrize("path", ["/", "/integrations", "/api/summary", "/static/app.js", "/x"])
def test_security_headers_everywhere(client: TestClient, path: str):
    headers = client.get(path).headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-content-type-options"] == "nosniff"


def test_pages_have_no_inline_script_or_style(client: TestClient):
    for path in ("/", "/integrations"):
        page = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page)
        assert " style=" not in page and "<style" not in page
        assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


# --- escaping and secrets ---------------------------------------------------------------------


def test_hostile_labels_render_as_text(home: Settings, client: TestClient):
    registry = Registry.from_settings(home)
    for n, label in enumerate(STORED_AS_IS):
        registry.add(label, "free", f"sk-admin-hostile-{n:04d}-{'k' * 40}", f"org-hostile-{n}")
    page = client.get("/integrations").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp;" in page
    assert "x&#39;); DROP TABLE integrations; --" in page
    assert "O&#39;Brien &#34;Prod&#34;" in page
    assert "sk-admin-hostile" not in page.replace("sk-admin-...kkkk", "")


def test_an_error_message_is_escaped(home: Settings, client: TestClient):
    csrf = csrf_of(client)
    label = "<img src=x onerror=alert(1)>"
    form = {"csrf_token": csrf, "label": label, "plan": "enterprise", "key": ADMIN_KEY}
    page = client.post("/integrations", data=form, follow_redirects=True).text
    assert "Nothing was added" in page and "<img src=x" not in page


def test_the_admin_key_is_in_no_response(home: Settings, client: TestClient, capfd):
    csrf = csrf_of(client)
    add = {"csrf_token": csrf, "provider": "openai", "label": "Mine", "plan": "free",
           "key": ADMIN_KEY}  # fmt: skip
    responses = [client.post("/integrations", data=add, follow_redirects=False)]
    responses.append(client.post("/integrations", data=add))  # a duplicate: refused
    responses.append(client.post("/api/test-key", json={"key": OTHER_KEY},
                                 headers={"X-CSRF-Token": csrf}))  # fmt: skip
    responses.append(client.post("/api/test-key", json={"key": ADMIN_KEY + " x"},
                                 headers={"X-CSRF-Token": csrf}))  # fmt: skip
    integration_id = Registry.from_settings(home).list()[-1].id
    for path in ("/", "/integrations", "/api/integrations", "/api/jobs", "/api/summary"):
        responses.append(client.get(path))
    responses.append(client.post(f"/integrations/{integration_id}/test", data={"csrf_token": csrf}))
    for response in responses:
        text = response.text + str(response.headers)
        assert ADMIN_KEY not in text and OTHER_KEY not in text
        assert 'value="sk-admin' not in text  # the key field is never filled back in
    out, err = capfd.readouterr()
    assert ADMIN_KEY not in out + err and OTHER_KEY not in out + err
