"""Service processes for the demo: start ``teaclave-ma serve`` and wait until it is ready."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import attrs

from teaclave_ma.errors import TeaclaveMAError

log = logging.getLogger(__name__)


class ServiceStartError(TeaclaveMAError):
    """A service process exited, or did not become ready in time."""

    def __init__(self, name: str, message: str, stderr: str = "") -> None:
        self.stderr = stderr
        super().__init__(f"{name}: {message}")


@attrs.define
class ServiceProcess:
    name: str
    process: subprocess.Popen[str]
    address: tuple[str, int]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def serve_command(
    image: Path, manifest: Path, signatures: Path, config: Path, *, initialize_state: bool = False
) -> list[str]:
    return [
        sys.executable, "-m", "teaclave_ma.cli.main", "serve", str(image),
        "--manifest", str(manifest), "--signatures", str(signatures), "--config", str(config),
        *(["--initialize-state"] if initialize_state else []),
    ]  # fmt: skip


def start_service(
    name: str, command: list[str], log_path: Path, *, timeout: float = 60.0
) -> ServiceProcess:
    """Start a service; its stderr goes to ``log_path``, its stdout carries the ready line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line:
                message = json.loads(line)
                return ServiceProcess(
                    name, process, (message["host"], int(message["port"])), log_path
                )
        if process.poll() is not None:
            raise ServiceStartError(
                name, f"exited with status {process.returncode}", log_path.read_text()
            )
    process.kill()
    raise ServiceStartError(name, f"not ready within {timeout:.0f} s", log_path.read_text())


def run_to_exit(command: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to refuse to start, and collect what it said."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
