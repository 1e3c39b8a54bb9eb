"""The command line as a whole: global options anywhere, --version, usage errors, help, logs."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import teaclave_ma
from teaclave_ma.cli import log_setup
from teaclave_ma.cli.main import _subparsers, build_parser, main
from tests.helpers import run_cli


def teaclave_ma_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teaclave_ma.cli.main", *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=cwd,
    )  # fmt: skip


def test_version_names_the_package_version() -> None:
    result = teaclave_ma_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"teaclave-ma {teaclave_ma.__version__}\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "--log-format", "json", "--json", "trust", "show", "T"],
        ["trust", "show", "T", "-v", "--log-format", "json", "--json"],
        ["trust", "-v", "show", "--json", "T", "--log-format", "json"],
    ],
    ids=["before", "after", "between"],
)
def test_global_options_mean_the_same_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_format, args.json) == (True, "json", True)


def test_global_options_default_when_absent() -> None:
    args = build_parser().parse_args(["trust", "show", "T"])
    assert (args.verbose, args.log_format, args.json) == (False, "text", False)


def test_demo_accepts_verbose_after_the_subcommand(tmp_path: Path) -> None:
    # The README's `teaclave-ma demo -v`: parsed, not refused (the run itself is tested
    # elsewhere; a missing services directory ends this one early, with exit 2).
    result = teaclave_ma_cli("demo", "-v", "--services", str(tmp_path), "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "lacks the example services" in result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_usage_errors_under_json_print_a_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = run_cli(capsys, "manifest", "verify", "m.yaml", "--json")
    assert code == 2
    assert data == {
        "error": "usage",
        "command": "teaclave-ma manifest verify",
        "message": "the following arguments are required: --trust, --signatures",
    }
    code, data = run_cli(capsys, "--json", "no-such-command")
    assert code == 2
    assert data["error"] == "usage" and "invalid choice: 'no-such-command'" in str(data["message"])


def test_usage_errors_without_json_keep_stdout_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest", "verify", "m.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: teaclave-ma manifest verify")
    assert "error: the following arguments are required: --trust, --signatures" in captured.err


def test_json_is_refused_for_a_command_without_json_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, data = run_cli(
        capsys, "--json", "serve", "img", "--manifest", "m", "--signatures", "s", "--config", "c"
    )
    assert code == 2
    assert data["message"] == "serve has no --json output"


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            yield parser.prog, action


def test_every_option_and_argument_has_help_text() -> None:
    parser = build_parser()
    every = [*_options(parser), *(o for child in _subparsers(parser) for o in _options(child))]
    assert len(every) > 100
    missing = [
        f"{prog} {'/'.join(action.option_strings) or action.dest}"
        for prog, action in every
        if not action.help
    ]
    assert missing == []


def test_text_logs_carry_a_utc_timestamp() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_setup.TextFormatter())
    record = logging.LogRecord(
        "teaclave_ma.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    record.created = 1_790_000_000.25
    assert handler.format(record) == "2026-09-21T14:13:20.250Z WARNING teaclave_ma.x: hello you"


def test_json_logs_are_one_object_per_line_with_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "teaclave_ma.y", logging.ERROR, __file__, 1, "failed: %d", (3,), sys.exc_info()
        )
    record.created = 1_790_000_000.0
    line = log_setup.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert {k: entry[k] for k in ("time", "level", "logger", "message")} == {
        "time": "2026-09-21T14:13:20.000Z",
        "level": "ERROR",
        "logger": "teaclave_ma.y",
        "message": "failed: 3",
    }
    assert entry["exception"].endswith("ValueError: boom")


def _quote_verify_under_a_simulated_root(tmp_path: Path, *flags: str) -> list[str]:
    """stderr lines of a `quote verify` that logs one warning (the root is not Intel's)."""
    sim = tmp_path / "sim"
    if not sim.exists():
        assert teaclave_ma_cli("sim", "init", str(sim)).returncode == 0
        created = teaclave_ma_cli(
            "sim", "quote", str(sim), "--mr-enclave", "11" * 32, "--mr-signer", "22" * 32,
            "--out", str(tmp_path / "q.bin"),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
    result = teaclave_ma_cli(
        "quote", "verify", str(tmp_path / "q.bin"), "--collateral", str(sim / "collateral.json"),
        "--root", str(sim / "root.der"), "--trust-simulated-root", *flags,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if "NOT Intel's" in line]


def test_log_lines_carry_timestamps_or_are_json_objects(tmp_path: Path) -> None:
    (text,) = _quote_verify_under_a_simulated_root(tmp_path)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING teaclave_ma\.cli\.quote_cmd: trusting root .*",
        text,
    )
    (line,) = _quote_verify_under_a_simulated_root(tmp_path, "--log-format", "json")
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("WARNING", "teaclave_ma.cli.quote_cmd")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_configure_logging_keeps_an_embedding_programs_handlers() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before  # pytest's capture handlers
    log_setup.configure_logging(True, "json", io.StringIO())
    assert root.handlers == before
