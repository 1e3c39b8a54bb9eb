"""Run every benchmark group, each in a process of its own; print a table, write it as JSON.

Ratios are measured side by side in the same process and each figure is the median of
several repetitions, because these machines are noisy. ``--smoke`` runs each row a few
times only, to keep the command working in CI; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Row

# One module per comparison; each prints its rows as JSON lines (benchmarks.common.run_group).
GROUPS = ("quote_verification", "manifest_verification", "transport", "workers")
ROOT = Path(__file__).resolve().parents[1]


class GroupFailed(RuntimeError):
    pass


def run_group_process(group: str, smoke: bool) -> list[Row]:
    command = [sys.executable, "-m", f"benchmarks.{group}", *(["--smoke"] if smoke else [])]
    sys.stderr.write(f"running {group} ...\n")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GroupFailed(f"benchmark group {group} failed:\n{result.stderr}")
    return [
        Row(**{key: value for key, value in json.loads(line).items() if key != "ratio"})
        for line in result.stdout.splitlines()
        if line.strip()
    ]


def render(rows: list[Row]) -> str:
    lines = [
        f"{'what':<56} {'median':>12} {'compared with':>16} {'other':>12} {'ratio':>7}  target"
    ]
    for row in rows:
        unit = row.unit
        other = f"{row.other_ms:.3f}" if row.other_ms is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(
            f"{row.what:<56} {row.median_ms:>9.3f}{unit:<3} {row.compared_with or '-':>16}"
            f" {other:>12} {ratio:>7}  {row.target}"
        )
        if row.note:
            lines.append(f"{'':<4}{row.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few repetitions, to check it runs")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results.json"), help="where to write rows"
    )
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only these groups")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for group in args.only or GROUPS:
        try:
            rows += run_group_process(group, args.smoke)
        except GroupFailed as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
    sys.stdout.write(render(rows) + "\n")
    report = {
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "smoke": args.smoke,
        "rows": [row.as_dict() for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
