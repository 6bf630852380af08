"""A Costs API that answers exactly the pages a test hands it, over real HTTP (hostile answers the
emulator does not make: foreign currencies, duplicate buckets, impossible days)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ORG = "org-canned"
KEY = "sk-admin-canned-0123456789abcdefghijklmnopqrstuvwxyz"
DAY = 86_400


def midnight(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY


def result(value: str | float, currency: str = "usd", line_item: str = "gpt-4o, input") -> dict:
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": currency},
        "line_item": line_item,
        "project_id": "proj_canned",
        "api_key_id": None,
        "quantity": None,
        "quantity_unit": None,
    }


def bucket(day: date, results: list[dict], start: int | None = None) -> dict:
    begin = midnight(day) if start is None else start
    return {
        "object": "bucket",
        "start_time": begin,
        "end_time": begin + DAY,
        "results": results,
    }


class CannedApi:
    """Answers GET /v1/organization/costs with ``pages`` in turn (cursor "p1", "p2", ...)."""

    def __init__(self, pages: list[list[dict]]) -> None:
        self.pages = pages
        self.requests = 0
        self.before_answer: Callable[[], None] | None = None
        self.base_url = ""

    def page(self, cursor: str | None) -> dict[str, Any]:
        number = int(cursor[1:]) if cursor else 0
        has_more = number + 1 < len(self.pages)
        return {
            "object": "page",
            "data": self.pages[number],
            "has_more": has_more,
            "next_page": f"p{number + 1}" if has_more else None,
        }


@contextmanager
def serving(api: CannedApi) -> Iterator[CannedApi]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            api.requests += 1
            if api.before_answer is not None:
                api.before_answer()
            cursor = None
            if "page=" in self.path:
                cursor = self.path.split("page=", 1)[1].split("&", 1)[0]
            body = json.dumps(api.page(cursor)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("openai-organization", ORG)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
