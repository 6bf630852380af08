"""Progress of a long sync for the person who started it from the command line.

A sync started by the CLI runs in the CLI's own process (in-process runs) or in a Dagster run
process. The CLI turns progress on for its process with ``shown_on(stream)``; the sync reports
each day it fetched through ``report``, which does nothing anywhere else (daemon runs, tests),
so the pipeline never writes to a terminal nobody watches.

On a terminal: one line redrawn in place (days, a bar, rows, elapsed), at most ten times a
second. Elsewhere (a pipe, a log file): a plain line at a tenth of the days, at most every
PLAIN_LINE_SECONDS (a quick sync prints none: its summary line says it all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

BAR_WIDTH = 24
REDRAW_SECONDS = 0.1
PLAIN_LINE_SECONDS = 5.0


class Progress:
    def __init__(
        self, stream: TextIO, interactive: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream, self._interactive, self._clock = stream, interactive, clock
        self._started = clock()
        self._last_draw = clock()
        self._last_tenth = -1
        self._drawn = False

    def update(self, what: str, days: int, total_days: int, rows: int) -> None:
        now = self._clock()
        tenth = days * 10 // max(total_days, 1)
        if self._interactive:
            if now - self._last_draw < REDRAW_SECONDS and days < total_days:
                return
            self._stream.write("\r" + self._line(what, days, total_days, rows, now) + "\x1b[K")
            self._drawn = True
        elif tenth > self._last_tenth and now - self._last_draw >= PLAIN_LINE_SECONDS:
            self._stream.write(self._line(what, days, total_days, rows, now) + "\n")
        else:
            return
        self._last_draw, self._last_tenth = now, tenth
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self, what: str, days: int, total_days: int, rows: int, now: float) -> str:
        share = min(days / max(total_days, 1), 1.0)
        bar = ""
        if self._interactive:
            filled = round(share * BAR_WIDTH)
            bar = f" [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
        return f"  {what}: {days}/{total_days} days{bar} {rows:,} rows, {now - self._started:.1f} s"


_shown: Progress | None = None


@contextmanager
def shown_on(stream: TextIO) -> Iterator[Progress]:
    """Show the progress of syncs run by this process on ``stream`` while the block runs."""
    global _shown
    progress = Progress(stream, interactive=stream.isatty())
    _shown = progress
    try:
        yield progress
    finally:
        _shown = None
        progress.close()


def report(what: str, days: int, total_days: int, rows: int) -> None:
    if _shown is not None:
        _shown.update(what, days, total_days, rows)
