"""The README's commands run as written: its shell blocks are extracted and executed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment

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


def file_blocks() -> dict[str, str]:
    """Every block marked ``<!-- file: PATH -->``, by its path."""
    found = re.findall(r"^<!-- file: (\S+) -->\n```\w+\n(.*?)^```", README.read_text(), re.M | re.S)
    return dict(found)


def write_file_blocks(root: Path) -> None:
    for relative, text in file_blocks().items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def test_the_service_author_and_test_author_examples_run_as_written(tmp_path: Path) -> None:
    write_file_blocks(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_greeter.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_outside_caller_example_runs_as_written(tmp_path: Path) -> None:
    write_file_blocks(tmp_path)
    deployment = SimulatedDeployment.create(tmp_path / "deployment", tmp_path)
    deployment.build("greeter")
    deployment.publish_manifest(
        {"greeter": deployment.review("greeter")}, version=1, signers=["alice", "bob"]
    )
    config_path = deployment.runtime_config("greeter")
    config = parse_runtime_config(config_path.read_bytes(), config_path.parent)
    server = ServiceRuntime(
        deployment.images["greeter"],
        config,
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )
    host, port = server.start()
    try:
        # The example's relative paths are the deployment's layout; only the port differs.
        script = file_blocks()["call_greeter.py"].replace("127.0.0.1:7000", f"{host}:{port}")
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=deployment.root, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello ann (from stranger)"
