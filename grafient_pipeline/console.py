"""Terminal presentation shared by the CLI and the demo: tables and notices for people."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None
) -> None:
    """Columns padded to fit, a rule under the header, and the row count."""
    out = sys.stdout if out is None else out
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
    print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})", file=out)


def say_waiting(seconds: float) -> None:
    print(
        f"grafient: the warehouse is busy (a sync is writing it); waiting up to {seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
