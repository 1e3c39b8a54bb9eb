"""The benchmark command keeps working (CI runs its smoke mode; its numbers mean nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main


def test_benchmarks_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke", "--json", str(tmp_path / "rows.json")]) == 0
    table = capsys.readouterr().out
    assert "quote verification, cold" in table
    report = json.loads((tmp_path / "rows.json").read_text())
    assert {row["what"] for row in report["rows"]} >= {
        "quote verification, cold",
        "quote verification, warm",
        "manifest verification, 1,000 services, 3-of-5",
        "mutual RA-TLS handshake to first RPC answered",
        "mutual RA-TLS handshake, first contact (peer certificate caches cold)",
        "RPC round trips on an established connection",
        "server with 20 concurrent attested connections",
        "handshakes per second, 1 concurrent client",
        "handshakes per second, 8 concurrent clients",
        "attested handshakes per second, 2 workers on one port",
    }
    assert all(row["median_ms"] > 0 for row in report["rows"])
