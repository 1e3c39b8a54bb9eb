"""Small helpers shared by test modules."""

from __future__ import annotations

import json

import pytest

from teaclave_ma.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    """Run the CLI in-process; the exit code and the ``--json`` object (empty without one)."""
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.lstrip().startswith("{") else {}
