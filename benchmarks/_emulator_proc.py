"""The Costs API emulator in its own process (its own core), driven over stdin by a benchmark.

Started by ``benchmarks/_common.py``; prints one JSON line ``{"base_url": ...}`` once it serves,
then answers one JSON line per command line on stdin:

    count                         -> {"count": requests served so far}
    expected ORG START END        -> {"total": "exact decimal text"}  (END inclusive, ISO dates)
    quit                          -> exits

``--clock DATE`` fixes the emulator's "now" at DATE 00:00 UTC, so every day before DATE is
complete whatever the time of day the benchmark runs (the rows served do not depend on it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime

from grafient_pipeline.providers.openai.emulator import CostsEmulator


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", required=True, help="JSON object {org_id: admin_key}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-per-day", type=int, required=True)
    parser.add_argument("--clock", help="fixed now: this date at 00:00 UTC")
    args = parser.parse_args()
    now = None
    if args.clock:
        fixed = datetime.combine(date.fromisoformat(args.clock), datetime.min.time(), UTC)
        now = lambda: fixed  # noqa: E731
    emulator = CostsEmulator(
        json.loads(args.orgs), seed=args.seed, results_per_day=args.results_per_day, now=now
    ).start()
    print(json.dumps({"base_url": emulator.base_url}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "count":
            answer: dict[str, object] = {"count": emulator.request_count}
        elif words[0] == "expected":
            org, start, end = words[1], date.fromisoformat(words[2]), date.fromisoformat(words[3])
            answer = {"total": format(emulator.expected_total(org, start, end), "f")}
        else:
            answer = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(answer), flush=True)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
