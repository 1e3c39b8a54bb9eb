"""The load script keeps working: a tiny run through the real example services.

Its figures are not judged here (timing goals live in benchmarks/); only that the report
holds real measurements: RPCs made in both phases, none failed, every server measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_load_run_reports_real_figures(tmp_path: Path) -> None:
    report_path = tmp_path / "load.json"
    command = [sys.executable, "-m", "benchmarks.load", "--clients", "4", "--workers", "2"]
    command += ["--stalled", "2", "--seconds", "3", "--json", str(report_path)]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "RPCs completed" in result.stdout
    report = json.loads(report_path.read_text())
    assert (report["clients"], report["client_processes"], report["stalled"]) == (4, 2, 2)
    for name, phase in report["phases"].items():
        assert phase["rpcs"] > 0, name
        assert phase["failures"] == 0, (name, phase["failures_by_type"])
        assert 0 < phase["p50_ms"] <= phase["p99_ms"], name
    assert report["stalled_connections"]["opened"] >= 2
    assert set(report["servers"]) == {"kms", "storage", "authentication", "frontend"}
    for name, usage in report["servers"].items():
        assert usage["open_fds"] > 0 and usage["rss_bytes"] > 0, name
