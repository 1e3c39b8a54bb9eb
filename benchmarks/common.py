"""What every benchmark group shares: a result row, the median timer, the group entry point.

Each group is a module with ``rows(smoke: bool) -> list[Row]``; ``python -m benchmarks``
runs every group in a fresh process of its own, so one group's caches, threads or memory
never colour another's figures, and both sides of a comparison run in that one process.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@attrs.frozen
class Row:
    what: str
    median_ms: float
    compared_with: str = ""
    other_ms: float | None = None
    target: str = ""
    # Rows that are not times (memory, rates) say so here; median_ms then holds the value.
    unit: str = "ms"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.other_ms is None else self.median_ms / self.other_ms

    def as_dict(self) -> dict[str, object]:
        return {**attrs.asdict(self), "ratio": self.ratio}


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (/proc/PID/stat fields 14 and 15;
    the process name before them is in parentheses and may hold spaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_ms(function: Callable[[], object], repetitions: int) -> float:
    samples = []
    for _ in range(repetitions):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run_group(rows: Callable[[bool], list[Row]]) -> None:
    """Entry point of a group's process: rows as JSON on stdout, one object per line."""
    smoke = "--smoke" in sys.argv[1:]
    for row in rows(smoke):
        sys.stdout.write(json.dumps(row.as_dict()) + "\n")
