"""The DuckLake tests' subprocesses (run on duckdb 1.5.5, see tests/ducklake.py), one command each:

    schema                                      create the warehouse's tables and views
    sync ID KEY BASE_URL START END [--hang]     sync one slice with slice_sync.sync_slice
                                                (--hang: stop before the commit, print "ready")
    read STOP_FILE IDS                          totals per integration, in a loop, as JSON lines
    query SQL                                   print the rows of one query as JSON

The warehouse is GRAFIENT_WAREHOUSE (ducklake:...) of the environment.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from datetime import date
from pathlib import Path

from grafient_pipeline.migrations.warehouse import ensure_schema
from grafient_pipeline.plans import DateRange
from grafient_pipeline.providers import get_provider
from grafient_pipeline.settings import load_settings
from grafient_pipeline.slice_sync import sync_slice
from grafient_pipeline.sync import Slice
from grafient_pipeline.warehouse import connect


def schema() -> None:
    with connect(load_settings().warehouse) as conn:
        ensure_schema(conn)


def sync(integration_id: str, key: str, base_url: str, start: str, end: str, hang: bool) -> None:
    settings = load_settings()
    piece = Slice(integration_id, DateRange(date.fromisoformat(start), date.fromisoformat(end)))
    provider = get_provider("openai")

    def still_registered() -> bool:
        if hang:  # the slice is loaded and checked, its transaction open: the test kills us
            print("ready", flush=True)
            time.sleep(120)
        return True

    with provider.client(key, base_url) as client:
        synced = sync_slice(
            piece,
            provider,
            client,
            functools.partial(connect, settings.warehouse),
            run_id=f"run-{integration_id}",
            staging_dir=settings.staging_dir,
            today=date.today(),
            still_registered=still_registered,
        )
    print(json.dumps({"rows": synced.rows}), flush=True)


def read(stop_file: str, ids: str) -> None:
    """Totals per integration of every cost table, from one snapshot per answer."""
    settings = load_settings()
    wanted = ids.split(",")
    while not Path(stop_file).exists():
        with connect(settings.warehouse, read_only=True) as conn:
            answer = {}
            for table, amount in (("raw_openai_costs", "amount_value"), ("fct_costs", "amount_usd"),
                                  ("rollup_model_daily", "amount_usd")):  # fmt: skip
                rows = conn.execute(
                    f"SELECT integration_id, sum({amount})::VARCHAR FROM {table} "
                    "WHERE list_contains($ids, integration_id) GROUP BY 1",
                    {"ids": wanted},
                ).fetchall()
                answer[table] = dict(rows)
        print(json.dumps(answer), flush=True)
        time.sleep(0.05)


def query(sql: str) -> None:
    with connect(load_settings().warehouse, read_only=True) as conn:
        rows = conn.execute(sql).fetchall()
    print(json.dumps(rows, default=str))


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "schema":
        schema()
    elif command == "sync":
        hang = "--hang" in args
        sync(*[a for a in args if a != "--hang"], hang=hang)
    elif command == "read":
        read(*args)
    elif command == "query":
        query(*args)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
