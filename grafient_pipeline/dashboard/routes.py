"""The pages, the actions and the JSON API (documented in the README, "Dashboard")."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from grafient_pipeline import operations
from grafient_pipeline.dashboard import security, views
from grafient_pipeline.dashboard.app import (
    HERE,
    TEMPLATES,
    back,
    context,
    flash,
    form_of,
    guarded,
    refuse,
    render,
    wants_json,
)
from grafient_pipeline.dashboard.figures import RANGES, Filters
from grafient_pipeline.dashboard.reader import NoSnapshot
from grafient_pipeline.dashboard.security import Session
from grafient_pipeline.plans import PLANS, backfill_window
from grafient_pipeline.providers import PROVIDERS as ALL_PROVIDERS
from grafient_pipeline.redact import scrub
from grafient_pipeline.registry import ID_PATTERN, Integration, Registry, RegistryError
from grafient_pipeline.settings import Settings

PROVIDERS = tuple(ALL_PROVIDERS)  # what Add Integration offers
PROVIDER_NAMES = {name: provider.title for name, provider in ALL_PROVIDERS.items()}
KEY_PREFIXES = {name: provider.key_prefix for name, provider in ALL_PROVIDERS.items()}
_PROVIDER = re.compile(r"[a-z0-9-]{1,32}")
USER_ERRORS = (operations.OperationError, RegistryError, ValueError)


def filters_of(request: Request) -> Filters:
    query = request.query_params
    days = int(query["days"]) if query.get("days", "").isdigit() else RANGES[0]
    integration = query.get("integration") or None
    provider = query.get("provider") or None
    return Filters(
        today=context(request).today(),
        days=days if days in RANGES else RANGES[0],
        integration=integration if integration and ID_PATTERN.fullmatch(integration) else None,
        provider=provider if provider and _PROVIDER.fullmatch(provider) else None,
    )


def dashboard_view(request: Request, filters: Filters) -> tuple[views.DashboardView | None, str]:
    """The built view of the current snapshot and its rendered body, kept per snapshot and
    filters (a snapshot never changes); view None when nothing was published yet."""
    ctx = context(request)

    def body(view: views.DashboardView | None) -> str:
        return TEMPLATES.env.get_template("dashboard_body.html").render(
            view=view, filters=filters, ranges=RANGES, provider_names=PROVIDER_NAMES
        )

    def build() -> tuple[Any, tuple[views.DashboardView, str]]:
        with ctx.reader.cursor() as (conn, generation):
            view = views.build(conn, generation, filters)
            return generation.key, (view, body(view))

    try:
        return ctx.cache.latest(filters, ctx.reader.generation().key, build)
    except NoSnapshot:
        return None, body(None)


# --- pages --------------------------------------------------------------------------------------


async def dashboard(request: Request, session: Session) -> Response:
    view, body = await run_in_threadpool(dashboard_view, request, filters_of(request))
    return render(request, session, "dashboard.html", {"view": view, "body": body})


def registry(request: Request) -> Registry:
    """The registry (its home-permission warning was printed once, at start-up)."""
    return operations.open_registry(context(request).settings, warn=io.StringIO())


def _cards(request: Request) -> list[dict[str, Any]]:
    ctx = context(request)
    cards = []
    for integration in registry(request).list():
        job = ctx.jobs.latest_for(integration.id)
        cards.append({"i": integration, "job": job.public() if job else None})
    return cards


async def integrations(request: Request, session: Session) -> Response:
    cards = await run_in_threadpool(_cards, request)
    return render(
        request, session, "integrations.html",
        {
            "cards": cards,
            "plans": PLANS,
            "providers": PROVIDERS,
            "provider_names": PROVIDER_NAMES,
            "key_prefixes": KEY_PREFIXES,
        },
    )  # fmt: skip


# --- actions --------------------------------------------------------------------------------------


def _job_response(request: Request, session: Session, job: Any, text: str) -> Response:
    if wants_json(request):
        return JSONResponse({"ok": True, "job": job.public()}, status_code=202)
    flash(session, "info", text)
    return back(f"/integrations#card-{job.integration_id}")


def _known(request: Request) -> Integration | None:
    integration_id = request.path_params["id"]
    if not ID_PATTERN.fullmatch(integration_id):
        return None
    try:
        return registry(request).get(integration_id)
    except RegistryError:
        return None


async def _integration_or_404(request: Request) -> Integration | None:
    return await run_in_threadpool(_known, request)


async def add_integration(request: Request, session: Session) -> Response:
    ctx, form = context(request), form_of(request)
    key = form.pop("key", "")
    label, plan = form.get("label", "").strip(), form.get("plan", "free")
    provider = form.get("provider", "openai")
    if provider not in PROVIDERS:
        flash(session, "error", "choose a provider from the list")
        return back("/integrations#add")
    try:
        new_id = await run_in_threadpool(
            operations.add_integration, ctx.settings, label, plan, key, provider
        )
    except USER_ERRORS as error:
        flash(session, "error", f"Nothing was added: {error}")
        return back("/integrations#add")
    days = backfill_window(plan, ctx.today()).days
    if await run_in_threadpool(_dagster_is_up, ctx.settings):
        flash(session, "ok", f"Added {new_id}: Dagster's onboarding sensor starts its "
              f"{days}-day backfill within a minute")  # fmt: skip
    else:
        ctx.jobs.submit("backfill", new_id)
        flash(session, "ok", f"Added {new_id}: its {days}-day backfill is running")
    return back(f"/integrations#card-{new_id}")


def _dagster_is_up(settings: Settings) -> bool:
    """This home's Dagster webserver is up (another home's UI on the port does not count)."""
    from grafient_pipeline.runs import find_webserver

    return find_webserver(settings).ours


async def test_key(request: Request, session: Session) -> Response:
    """Test Connection of the Add form: the key is tested, never stored, never echoed."""
    form = form_of(request)
    key = form.pop("key", "")
    provider = form.get("provider", "openai")
    if provider not in PROVIDERS:
        return JSONResponse({"ok": False, "message": "choose a provider from the list"})
    try:
        check = await run_in_threadpool(operations.check_key, provider, key)
    except USER_ERRORS as error:
        return JSONResponse({"ok": False, "message": scrub(str(error))})
    return JSONResponse(
        {"ok": check.ok, "organization_id": check.organization_id, "message": scrub(check.message)}
    )


async def force_sync(request: Request, session: Session) -> Response:
    integration = await _integration_or_404(request)
    if integration is None:
        return refuse(request, 404, "no such integration; see the Integrations page")
    job = context(request).jobs.submit("sync", integration.id)
    return _job_response(request, session, job, f"Force Sync of {integration.id} started")


async def backfill(request: Request, session: Session) -> Response:
    integration = await _integration_or_404(request)
    if integration is None:
        return refuse(request, 404, "no such integration; see the Integrations page")
    job = context(request).jobs.submit("backfill", integration.id)
    return _job_response(request, session, job, f"Backfill of {integration.id} started")


async def test_connection(request: Request, session: Session) -> Response:
    integration = await _integration_or_404(request)
    if integration is None:
        return refuse(request, 404, "no such integration; see the Integrations page")
    settings = context(request).settings
    try:
        _, check = await run_in_threadpool(operations.test_integration, settings, integration.id)
        ok, text = True, f"{integration.id}: {check.message}"
    except USER_ERRORS as error:
        ok, text = False, str(error)
    if wants_json(request):
        return JSONResponse({"ok": ok, "message": scrub(text)})
    flash(session, "ok" if ok else "error", text)
    return back(f"/integrations#card-{integration.id}")


async def change_plan(request: Request, session: Session) -> Response:
    integration = await _integration_or_404(request)
    if integration is None:
        return refuse(request, 404, "no such integration; see the Integrations page")
    plan = form_of(request).get("plan", "")
    try:
        changed_settings = context(request).settings
        changed, new_days = await run_in_threadpool(
            operations.set_plan, changed_settings, integration.id, plan
        )
        if new_days is not None and not await run_in_threadpool(_dagster_is_up, changed_settings):
            context(request).jobs.submit("backfill", changed.id)
        flash(session, "ok", f"{changed.id}: plan {changed.plan}")
    except USER_ERRORS as error:
        flash(session, "error", str(error))
    return back(f"/integrations#card-{integration.id}")


async def remove(request: Request, session: Session) -> Response:
    integration_id = request.path_params["id"]
    form = form_of(request)
    if not ID_PATTERN.fullmatch(integration_id):
        return refuse(request, 404, "no such integration; see the Integrations page")
    if form.get("confirm") != integration_id:
        flash(session, "error", f"Not removed: type {integration_id} in the box to confirm")
        return back(f"/integrations#card-{integration_id}")
    purge = form.get("purge") == "yes"
    try:
        await run_in_threadpool(
            operations.remove_integration, context(request).settings, integration_id, purge=purge
        )
    except USER_ERRORS as error:
        flash(session, "error", str(error))
        return back("/integrations")
    kept = "its warehouse rows were deleted" if purge else "its warehouse rows stay"
    flash(session, "ok", f"Removed {integration_id} and its key; {kept}")
    return back("/integrations")


# --- login ----------------------------------------------------------------------------------------


async def login_page(request: Request, session: Session) -> Response:
    if not context(request).token or session.authenticated:
        return back("/")
    return render(request, session, "login.html", {})


async def login(request: Request, session: Session) -> Response:
    ctx = context(request)
    if not ctx.token:
        return back("/")
    given = form_of(request).get("token", "")
    if not security.token_matches(given, ctx.token):
        await asyncio.sleep(0.5)  # slows guessing down
        flash(session, "error", "That is not the dashboard token (GRAFIENT_DASHBOARD_TOKEN)")
        return back("/login")
    ctx.sessions.drop(session.id)
    fresh = ctx.sessions.new(authenticated=True)
    response = back("/")
    response.headers.append("set-cookie", security.cookie_header(fresh, ctx.secure_cookies))
    return response


async def logout(request: Request, session: Session) -> Response:
    context(request).sessions.drop(session.id)
    response = back("/login" if context(request).token else "/")
    response.headers.append("set-cookie", security.cookie_header(None, False))
    return response


# --- JSON API -------------------------------------------------------------------------------------


async def _view_or_empty(request: Request) -> views.DashboardView | JSONResponse:
    view, _ = await run_in_threadpool(dashboard_view, request, filters_of(request))
    if view is None:
        return JSONResponse({"error": "no snapshot yet: add an integration and sync"}, 404)
    return view


async def api_summary(request: Request, session: Session) -> Response:
    view = await _view_or_empty(request)
    if isinstance(view, JSONResponse):
        return view
    h = view.headline
    return JSONResponse(
        views.jsonable(
            {
                "published_at": view.published_at,
                "last_synced_at": view.last_synced_at,
                "month": h.month,
                "month_to_date_usd": h.month_to_date_usd,
                "yesterday": {
                    "date": h.yesterday,
                    "amount_usd": h.yesterday_usd,
                    "is_final": h.yesterday_final,
                },
                "forecast": None
                if h.forecast_usd is None
                else {
                    "month_end_usd": h.forecast_usd,
                    "low_usd": h.forecast_low_usd,
                    "high_usd": h.forecast_high_usd,
                },
                "budgets": None if view.budgets is None else [b.__dict__ for b in view.budgets],
                "filters": view.filters.__dict__,
            }
        )
    )


async def api_daily(request: Request, session: Session) -> Response:
    view = await _view_or_empty(request)
    if isinstance(view, JSONResponse):
        return view
    by = request.query_params.get("by", "model")
    chart = view.by_token_type if by == "token_type" else view.by_model
    return JSONResponse({"by": "token_type" if by == "token_type" else "model",
                         **views.chart_json(chart)})  # fmt: skip


async def api_top(request: Request, session: Session) -> Response:
    view = await _view_or_empty(request)
    if isinstance(view, JSONResponse):
        return view
    return JSONResponse(
        {
            "days": view.filters.days,
            "models": views.ranked_json(view.top_models),
            "projects": views.ranked_json(view.top_projects),
            "api_keys": views.ranked_json(view.top_api_keys),
        }
    )


async def api_anomalies(request: Request, session: Session) -> Response:
    view = await _view_or_empty(request)
    if isinstance(view, JSONResponse):
        return view
    rows = None if view.anomalies is None else [a.__dict__ for a in view.anomalies]
    return JSONResponse({"computed": rows is not None, "anomalies": views.jsonable(rows or [])})


async def api_integrations(request: Request, session: Session) -> Response:
    cards = await run_in_threadpool(_cards, request)
    return JSONResponse(
        [
            {
                **card["i"].public_dict(),
                "backfilled_days": card["i"].backfilled_days,
                "job": card["job"],
            }
            for card in cards
        ]
    )


async def api_jobs(request: Request, session: Session) -> Response:
    return JSONResponse([job.public() for job in context(request).jobs.jobs()])


async def api_job(request: Request, session: Session) -> Response:
    job = context(request).jobs.get(request.path_params["id"])
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    return JSONResponse(job.public())


async def healthz(request: Request, session: Session) -> Response:
    return JSONResponse({"ok": True})


def routes() -> list:
    def get(path: str, handler, public: bool = False) -> Route:
        return Route(path, guarded(handler, public=public), methods=["GET"])

    def post(path: str, handler, public: bool = False) -> Route:
        return Route(path, guarded(handler, public=public), methods=["POST"])

    return [
        get("/", dashboard),
        get("/integrations", integrations),
        post("/integrations", add_integration),
        post("/integrations/{id}/sync", force_sync),
        post("/integrations/{id}/backfill", backfill),
        post("/integrations/{id}/test", test_connection),
        post("/integrations/{id}/plan", change_plan),
        post("/integrations/{id}/remove", remove),
        get("/login", login_page, public=True),
        post("/login", login, public=True),
        post("/logout", logout, public=True),
        get("/healthz", healthz, public=True),
        get("/api/summary", api_summary),
        get("/api/daily", api_daily),
        get("/api/top", api_top),
        get("/api/anomalies", api_anomalies),
        get("/api/integrations", api_integrations),
        get("/api/jobs", api_jobs),
        get("/api/jobs/{id}", api_job),
        post("/api/test-key", test_key),
        post("/api/integrations/{id}/sync", force_sync),
        post("/api/integrations/{id}/test", test_connection),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
