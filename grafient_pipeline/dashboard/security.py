"""Who may use the dashboard, and the headers every answer carries.

- Bound to a loopback address it needs no login (only this machine's users reach it); on any
  other address it refuses to start unless GRAFIENT_DASHBOARD_TOKEN is set, and then every page
  and API call needs a session opened with that token on the login form.
- Sessions live in this process's memory: the cookie is a random id (HttpOnly,
  SameSite=Strict), never the token. Logging in replaces the session id.
- Every state-changing request carries the session's CSRF token (form field or X-CSRF-Token
  header) and, when the browser sends one, an Origin of this very host.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grafient_pipeline.operations import OperationError

TOKEN_ENV = "GRAFIENT_DASHBOARD_TOKEN"
COOKIE = "grafient_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
MIN_TOKEN_LENGTH = 16

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class StartRefused(OperationError):
    """The dashboard may not start as asked (the message says what to do)."""


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and a token too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise StartRefused(
            f"{TOKEN_ENV} is shorter than {MIN_TOKEN_LENGTH} characters: use a long random "
            "one, for example: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not is_loopback(host) and not token:
        raise StartRefused(
            f"refusing to listen on {host}: anyone who reaches it could manage your "
            f"integrations. Set {TOKEN_ENV} (a long random secret) to require a login, or "
            "keep the default --host 127.0.0.1"
        )


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Session:
    id: str
    csrf: str
    authenticated: bool = False
    seen: float = field(default_factory=time.monotonic)
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)


class Sessions:
    """In-memory sessions, the oldest dropped first beyond MAX_SESSIONS or SESSION_SECONDS."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._items.get(session_id)
            if session is None or time.monotonic() - session.seen > SESSION_SECONDS:
                return None
            session.seen = time.monotonic()
            self._items.move_to_end(session_id)
            return session

    def new(self, authenticated: bool = False) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), authenticated)
        with self._lock:
            self._items[session.id] = session
            while len(self._items) > MAX_SESSIONS:
                self._items.popitem(last=False)
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._items.pop(session_id, None)


def cookie_header(session: Session | None, secure: bool) -> str:
    if session is None:  # log out: expire the cookie
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict{flags}"


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())


def origin_ok(origin: str | None, host: str | None) -> bool:
    """A cross-site request is refused; one without Origin (old clients, curl) passes on.

    (Browsers send `Origin: null` on a form POST under `Referrer-Policy: no-referrer`: hence
    `same-origin`, which still tells other sites nothing.)"""
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == (host or "").lower()


class SecurityHeaders:
    """Adds the security headers, and `Cache-Control: no-store` to everything but /static."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
