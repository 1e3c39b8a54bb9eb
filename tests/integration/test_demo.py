"""The README's main job, run the way a user runs it: every expectation must hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_until

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def test_demo_runs_end_to_end_and_every_expectation_holds(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "teaclave_ma.cli.main", "demo", "--workdir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    titles = {outcome["title"]: outcome for outcome in report["outcomes"]}
    assert report["ok"] is True
    assert len(titles) == 9
    assert all(outcome["held"] for outcome in titles.values())
    assert (
        "1 of the required 2"
        in titles["storage started with a manifest signed by alice only"]["detail"]
    )
    assert (
        "not accepted for service 'frontend'"
        in titles["client expects frontend but reaches authentication"]["detail"]
    )
    assert "debug enclave" in titles["frontend connects to a debug storage enclave"]["detail"]
    # each server-side refusal is reported with the server's own reason, for the right attempt
    assert "it is the manifest's 'client'" in titles["client calls storage directly"]["detail"]
    assert "matches no entry" in titles["tampered frontend calls storage"]["detail"]
    assert (
        "not released to service 'frontend'"
        in titles["frontend asks the kms for authentication's token key"]["detail"]
    )
    assert titles["sealed report job started with `teaclave-ma run`"]["detail"].startswith(
        "report ran for ACME Bank"
    )
    assert (
        "not accepted for service 'kms'"
        in titles["sealed report job pointed at storage posing as the kms"]["detail"]
    )
    # No secret value and no unsealed file is left on the host's disk: the report's config
    # exists only sealed, no secrets file exists, and the kms keeps only sealed files.
    config = (SERVICES_DIR / "report" / "config.yaml").read_bytes()
    files = [path for path in (tmp_path / "run").rglob("*") if path.is_file()]
    assert [path for path in files if config in path.read_bytes()] == []
    assert [path for path in files if path.name in ("secrets.yaml", "api-token")] == []
    kms_state = [path for path in files if "kms" in path.parts and path.suffix == ".sealed"]
    assert {path.name for path in kms_state} >= {"kms-secrets.sealed", "kms-store-head.sealed"}
    assert all(b'"teaclave-ma sealed ' in path.read_bytes() for path in kms_state)
    # the services that refused callers say so in their logs, with the caller's identity
    storage_log = (tmp_path / "run" / "logs" / "storage.log").read_text()
    assert "storage refused client" in storage_log
    assert "is not accepted for service" in storage_log


def _processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line mentions ``text`` (the demo's children
    all name files in its workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # gone meanwhile
            if text.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_services_start_stops_every_child(
    tmp_path: Path, signum: signal.Signals
) -> None:
    workdir = tmp_path / "run"
    demo = subprocess.Popen(
        [sys.executable, "-m", "teaclave_ma.cli.main", "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # kms is up and storage is being started: the moment the orphans came from
        assert wait_until((workdir / "logs" / "storage.log").exists, timeout=120)
        demo.send_signal(signum)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"demo interrupted by {signum.name}: every service it started has been stopped"
    )
    assert _processes_mentioning(str(workdir)) == []
