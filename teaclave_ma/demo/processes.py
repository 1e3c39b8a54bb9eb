"""Service processes for the demo: start ``teaclave-ma serve`` and wait until it is ready."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the process that started the children (a BaseException,
    so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class ChildProcesses:
    """Every process a supervisor (the demo) starts, so that an interrupt stops them all.

    Each child runs in a process group of its own: a Ctrl-C at the terminal reaches the
    supervisor alone, which then stops the children, grandchildren included. A signal that
    arrives while a child is being started is held until it is registered, so no child can
    be left behind between its fork and its registration."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[str]] = []
        self._starting = False
        self.interrupted: int | None = None

    def handle_signals(self) -> None:
        """From now on SIGINT and SIGTERM raise ``Interrupted`` in the main thread."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.interrupted = signum
        # A second Ctrl-C must not cut the clean-up short and orphan what is left.
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        if not self._starting:
            raise Interrupted(signum)

    def spawn(self, command: list[str], **options: Any) -> subprocess.Popen[str]:
        self._starting = True
        try:
            process = subprocess.Popen(command, text=True, process_group=0, **options)
            self._processes.append(process)
        finally:
            self._starting = False
        if self.interrupted is not None:
            raise Interrupted(self.interrupted)
        return process

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every child's group, then SIGKILL what is still there after ``timeout``."""
        for process in self._processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d ignored SIGTERM; killing it", process.pid)
            _signal_group(process, signal.SIGKILL)  # also reaps grandchildren it left
            process.wait()
        self._processes.clear()


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def serve_command(
    image: Path,
    manifest: Path,
    signatures: Path,
    config: Path,
    *,
    initialize_state: bool = False,
    workers: int = 1,
) -> list[str]:
    """One worker unless told: the example services keep their data in memory, which N
    processes would split between them."""
    return [
        sys.executable, "-m", "teaclave_ma.cli.main", "serve", str(image),
        "--manifest", str(manifest), "--signatures", str(signatures), "--config", str(config),
        "--workers", str(workers), *(["--initialize-state"] if initialize_state else []),
    ]  # fmt: skip


def start_service(
    name: str,
    command: list[str],
    log_path: Path,
    *,
    timeout: float = 60.0,
    children: ChildProcesses | None = None,
) -> ServiceProcess:
    """Start a service; its stderr goes to ``log_path``, its stdout carries the ready line.
    With ``children`` the process is started and stopped as one of them."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "env": {**os.environ, "PYTHONUNBUFFERED": "1"},
    }
    with log_path.open("w") as log_file:
        if children is not None:
            process = children.spawn(command, stderr=log_file, **options)
        else:
            process = subprocess.Popen(command, stderr=log_file, text=True, **options)
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


def run_to_exit(
    command: list[str], children: ChildProcesses, *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end as one of ``children``, and collect what it said."""
    process = children.spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
