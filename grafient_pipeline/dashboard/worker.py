"""One long action of the dashboard in its own process:
`python -m grafient_pipeline.dashboard.worker sync|backfill ID [START END]`.

It calls the same operations as `grafient sync` / `grafient backfill` (run submission to this
home's Dagster webserver when it is up, in-process otherwise); the run publishes the snapshot. A
process, not a thread: a backfill parses JSON and writes DuckDB for many seconds, and the web
server's requests must not wait for its GIL. Progress lines go to stdout; the last line is
RESULT_PREFIX + JSON {"ok", "message", "run_id"}.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from datetime import date, timedelta

RESULT_PREFIX = "@@grafient-result "


class _Lines(io.TextIOBase):
    """The `out` stream of an operation: each line, scrubbed, straight to stdout."""

    def write(self, text: str) -> int:
        from grafient_pipeline.redact import scrub

        sys.stdout.write(scrub(text))
        sys.stdout.flush()
        return len(text)


def _run(kind: str, integration_id: str, start: str | None, end: str | None) -> dict:
    from grafient_pipeline import operations
    from grafient_pipeline.console import describe_sync
    from grafient_pipeline.plans import DateRange
    from grafient_pipeline.settings import load_settings
    from grafient_pipeline.sync import utc_today

    settings = load_settings()
    if kind == "backfill":
        summary = operations.run_backfill(settings, integration_id, _Lines())
    else:
        today = utc_today()
        dates = DateRange(
            date.fromisoformat(start) if start else today - timedelta(days=1),
            date.fromisoformat(end) if end else today,
        )
        summary = operations.sync_range(settings, integration_id, dates, _Lines())
    print(describe_sync(summary), flush=True)  # the run itself published the snapshot
    return {"ok": True, "message": f"{summary.piece} synced", "run_id": summary.run_id}


def main(argv: list[str] | None = None) -> int:
    from grafient_pipeline.redact import scrub

    warnings.filterwarnings("ignore")
    args = list(sys.argv[1:] if argv is None else argv)
    kind, integration_id = args[0], args[1]
    start, end = (args[2], args[3]) if len(args) >= 4 else (None, None)
    try:
        result = _run(kind, integration_id, start, end)
    except Exception as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        result = {"ok": False, "message": scrub(text), "run_id": None}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
