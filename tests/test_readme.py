"""The README's commands run as written: its shell blocks are extracted and executed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_blocks() -> list[str]:
    """Every ```sh block, with backslash continuations joined."""
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    return [block.replace("\\\n", " ") for block in blocks]


def block_with(command: str) -> str:
    (block,) = [block for block in shell_blocks() if command in block]
    return block


def run_shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # teaclave-ma as a newcomer has it: the installed command on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def last_json_object(output: str) -> dict[str, object]:
    start = output.rindex("\n{\n") + 1 if "\n{\n" in output else output.index("{")
    document: dict[str, object] = json.loads(output[start:])
    return document


def test_the_auditor_workflow_runs_as_written(tmp_path: Path) -> None:
    # A stand-in for the repository root: the block copies services/ from there.
    shutil.copytree(
        ROOT / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = run_shell(block_with("teaclave-ma auditor keygen"), tmp_path)
    assert result.returncode == 0, result.stderr
    report = last_json_object(result.stdout)
    assert report["valid"] is True
    assert report["version"] == 8
    assert sorted(report["signers"]) == ["alice", "bob"]
    assert report["services"] == ["storage"]


def test_the_quote_examples_on_the_shared_samples_run_as_written(shared_data: Path) -> None:
    lines = [
        line
        for line in block_with("teaclave-ma quote show").splitlines()
        if "../shared/data/" in line
    ]
    assert len(lines) == 2  # show and verify
    for line in lines:
        result = run_shell(line.split("#")[0], ROOT)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    assert last_json_object(result.stdout)["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
