"""The ASGI app: pages, actions and the JSON API (routes in `routes.py`, this is the plumbing).

Pages read the snapshot only; actions call grafient_pipeline.operations (the CLI's code paths).
Every handler goes through `guarded`: session, login when a token is set, CSRF on POST.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from grafient_pipeline.console import money
from grafient_pipeline.dashboard import security
from grafient_pipeline.dashboard.jobs import JobRunner
from grafient_pipeline.dashboard.reader import SnapshotReader
from grafient_pipeline.dashboard.security import Session, Sessions
from grafient_pipeline.dashboard.views import ViewCache
from grafient_pipeline.redact import scrub
from grafient_pipeline.settings import Settings
from grafient_pipeline.sync import utc_today

HERE = Path(__file__).resolve().parent
MAX_BODY = 64 * 1024
Handler = Callable[[Request, Session], Awaitable[Response]]


@dataclass
class Context:
    settings: Settings
    token: str | None
    jobs: JobRunner
    today: Callable[[], date] = utc_today
    secure_cookies: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    cache: ViewCache = field(default_factory=ViewCache)
    reader: SnapshotReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = SnapshotReader(self.settings.snapshot_path)


def context(request: Request) -> Context:
    return request.app.state.ctx


# --- presentation helpers for the templates ---------------------------------------------------


def usd(value: Any) -> str:
    return "—" if value is None else f"${money(value)}"


def ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def utc(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def make_templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, ago=ago, utc=utc, svg=Markup)  # svg: charts.py escapes its text
    return Jinja2Templates(env=env)


TEMPLATES = make_templates()


def render(
    request: Request, session: Session, name: str, values: dict[str, Any], status: int = 200
) -> HTMLResponse:
    ctx = context(request)
    flashes, session.flashes = session.flashes, []
    base = {
        "csrf": session.csrf,
        "flashes": flashes,
        "login_required": bool(ctx.token),
        "path": request.url.path,
    }
    return TEMPLATES.TemplateResponse(request, name, {**base, **values}, status_code=status)


# --- request plumbing -------------------------------------------------------------------------


def session_of(request: Request) -> tuple[Session, bool]:
    sessions = context(request).sessions
    found = sessions.get(request.cookies.get(security.COOKIE))
    return (found, False) if found else (sessions.new(), True)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    )


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded or JSON body (bounded), as one string per field."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def refuse(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"ok": False, "error": message}, status_code=status)
    return HTMLResponse(
        f"<!doctype html><title>{status}</title><p>{Markup.escape(message)}</p>",
        status_code=status,
    )


def guarded(handler: Handler, *, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Session cookie, login when a token is set (unless `public`), CSRF and Origin on POST."""

    async def endpoint(request: Request) -> Response:
        ctx = context(request)
        session, fresh = session_of(request)
        if ctx.token and not public and not session.authenticated:
            if wants_json(request):
                response: Response = refuse(request, 401, "log in first: POST /login")
            else:
                response = RedirectResponse("/login", status_code=303)
        elif request.method == "POST" and not await _post_allowed(request, session):
            response = refuse(
                request, 403, "refused: this form has expired or came from another site; "
                "reload the page and try again",
            )  # fmt: skip
        else:
            response = await handler(request, session)
        if fresh:
            cookie = security.cookie_header(session, ctx.secure_cookies)
            response.headers.append("set-cookie", cookie)
        return response

    return endpoint


async def _post_allowed(request: Request, session: Session) -> bool:
    if not security.origin_ok(request.headers.get("origin"), request.headers.get("host")):
        return False
    form = await read_form(request)
    request.state.form = form
    given = request.headers.get(security.CSRF_HEADER) or form.get(security.CSRF_FIELD)
    return security.csrf_ok(session, given)


def form_of(request: Request) -> dict[str, str]:
    return getattr(request.state, "form", {})


def flash(session: Session, kind: str, text: str) -> None:
    session.flashes.append((kind, scrub(text)))


def back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- the app ----------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    token: str | None = None,
    jobs: JobRunner | None = None,
    today: Callable[[], date] = utc_today,
    secure_cookies: bool = False,
) -> Starlette:
    from grafient_pipeline.dashboard.routes import routes

    ctx = Context(settings, token or None, jobs or JobRunner(), today, secure_cookies)
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(security.SecurityHeaders),
            Middleware(GZipMiddleware, minimum_size=1000, compresslevel=5),
        ],
    )
    app.state.ctx = ctx
    return app
