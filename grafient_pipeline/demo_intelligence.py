"""The demo's spend intelligence: an injected spike on "Acme Research", a budget on it that
crosses 80 %, and a local signed-webhook receiver that both alerts reach.

Kept apart from demo.py: demo.py calls `spike_arguments` before starting the emulator and
`run` after the backfills.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grafient_pipeline.console import money
from grafient_pipeline.settings import Settings

ORG = "org-acme-research"
LABEL = "Acme Research"
BUDGET = "Acme Research monthly"
CHANNEL = "demo-webhook"


def pick_spike(today: date) -> tuple[date, Decimal]:
    """The latest of the last three complete days with spend, and a factor that makes it
    stand out (the emulator's days vary a lot): about 12x a typical day."""
    from grafient_pipeline.providers.openai.emulator import CostsEmulator

    emulator = CostsEmulator()  # the demo emulator's data (seed 0), never started
    history = emulator.expected_totals(ORG, today - timedelta(days=31), today - timedelta(days=1))
    day = next((today - timedelta(days=n) for n in (1, 2, 3)
                if history.get(today - timedelta(days=n))), today - timedelta(days=1))  # fmt: skip
    typical = sorted(history.values())[len(history) // 2] or Decimal(1)
    factor = max(10, math.ceil(12 * typical / (history.get(day) or typical)))
    return day, Decimal(factor)


def spike_arguments(spike: tuple[date, Decimal]) -> list[str]:
    day, factor = spike
    return ["--spike", f"{ORG}:{day.isoformat()}:{factor}"]


class Receiver(ThreadingHTTPServer):
    """A local webhook receiver: keeps the alerts whose signature checks out."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secret = secrets.token_urlsafe(24)
        self.alerts: list[dict] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/grafient-alerts"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        from grafient_pipeline.intelligence.channels import verify_signature

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        signed = verify_signature(
            self.server.secret,
            self.headers.get("X-Grafient-Timestamp", ""),
            body,
            self.headers.get("X-Grafient-Signature", ""),
        )
        if signed:
            self.server.alerts.append(json.loads(body))
        self.send_response(204 if signed else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _setup(settings: Settings, integration_id: str, receiver: Receiver) -> Decimal:
    """The demo channel (pointing at this run's receiver) and a budget about 85 % used."""
    from grafient_pipeline.intelligence import store
    from grafient_pipeline.operations import open_registry
    from grafient_pipeline.sync import utc_today
    from grafient_pipeline.warehouse import connect

    registry = open_registry(settings)
    if any(c.name == CHANNEL for c in store.list_channels(registry)):
        store.remove_channel(registry, CHANNEL)
    store.add_channel(registry, CHANNEL, "webhook", {"host": "127.0.0.1"},
                      {"url": receiver.url, "secret": receiver.secret})  # fmt: skip
    existing = [b for b in store.list_budgets(registry) if b.name == BUDGET]
    if existing:
        return existing[0].monthly_usd
    today = utc_today()
    with connect(settings.warehouse, read_only=True) as conn:
        (spent,) = conn.execute(
            "SELECT coalesce(sum(amount_usd), 0) FROM fct_costs "
            "WHERE integration_id = ? AND cost_date BETWEEN ? AND ?",
            [integration_id, today.replace(day=1), today],
        ).fetchone()
    monthly = Decimal(max(1, math.ceil(spent / Decimal("0.85"))))
    store.add_budget(registry, BUDGET, monthly, integration_id=integration_id)
    return monthly


def run(settings: Settings, ids: list[str], spike: tuple[date, Decimal]) -> Receiver:
    """Budget + channel, the intelligence assets in process, one delivery round, a summary."""
    from grafient_pipeline.definitions import build_definitions
    from grafient_pipeline.instance import get_instance
    from grafient_pipeline.intelligence.alert_log import deliver_pending
    from grafient_pipeline.operations import open_registry
    from grafient_pipeline.warehouse import connect

    integration_id = next(i for i in ids if i.startswith("acme-research"))
    receiver = Receiver()
    monthly = _setup(settings, integration_id, receiver)
    print(f"   local webhook receiver: {receiver.url} (HMAC-signed alerts)")
    print(f"   budget {BUDGET!r}: {money(monthly)} USD a month on {integration_id}")
    job = build_definitions(settings).resolve_job_def("spend_intelligence_job")
    job.execute_in_process(
        instance=get_instance(settings),
        raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
    )
    round_ = deliver_pending(open_registry(settings))
    with connect(settings.warehouse, read_only=True) as conn:
        status = conn.execute(
            "SELECT spend_usd, percent_used, forecast_usd, thresholds_crossed FROM budget_status "
            "WHERE budget = ? ORDER BY month DESC LIMIT 1",
            [BUDGET],
        ).fetchone()
        found = conn.execute(
            "SELECT series, actual_usd, expected_usd FROM spend_anomalies "
            "WHERE integration_id = ? AND dimension = 'total' AND day = ?",
            [integration_id, spike[0]],
        ).fetchone()
    if status:
        spent, used, forecast, crossed = status
        print(f"   budget status: {money(spent)} USD spent ({used}%), forecast "
              f"{money(forecast)} USD; thresholds crossed: {crossed or 'none'}")  # fmt: skip
        if not spent:
            print("   (the month has just begun and has no spend yet: the budget crosses 80 % "
                  "once there is some; run the demo again later)")  # fmt: skip
    if found:
        print(f"   injected anomaly found: {found[0]} on {spike[0]}: {money(found[1])} USD "
              f"against about {money(found[2])} USD expected")  # fmt: skip
    else:
        print(f"   the injected spike on {spike[0]} was not flagged")
    print(f"   alerts received by the local webhook ({len(receiver.alerts)}; "
          f"{round_.summary()}):")  # fmt: skip
    for alert in receiver.alerts:
        print(f"     - [{alert['key']}] {alert['title']}")
    if not receiver.alerts:
        print("     (none new: an alert is sent once, and an earlier demo run sent these)")
    return receiver
