"""The library's own quality gates, so CI enforces them: ruff and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("teaclave_ma", "tests", "services", "benchmarks", "fuzzing")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists():
        pytest.fail("ruff is not installed (it is in the [test] extra)")
    result = _run(
        sys.executable, "-m", "ruff", "check", *CHECKED
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy", "--strict", "teaclave_ma", "fuzzing")
    assert result.returncode == 0, result.stdout + result.stderr
