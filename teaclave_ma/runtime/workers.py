"""One service on every core: N worker processes serving one port, one parent owning the
trust state.

The parent builds the ``ServiceRuntime`` (image, sealed state, verified manifest, service)
and then forks the workers, so each starts with the same verified manifest and the same
credentials. Each worker listens on the same port with SO_REUSEPORT; the kernel spreads new
connections over them. The parent does not serve: it holds the port (bound, not
listening, so a port 0 resolves to one port for all), watches the manifest files and takes
SIGHUP, and is the only process that writes the sealed state:

- A manifest the parent's keeper accepts is sent, as its bytes and signature files, to
  every worker, which verifies it again with its own ``ManifestTrust`` (same embedded
  trust, same rollback floor) before enforcing it. A worker never reads the manifest files
  itself, so the host cannot make workers enforce different manifests by swapping files
  between their reads.
- A worker's trusted clock floor, when it moves, is sent to the parent, which witnesses it
  on its own clock and seals it. No two processes ever write the state file.

A worker that dies ends the service: the parent stops the others and exits non-zero, and
the supervisor (systemd, Kubernetes) restarts it whole. Restarting a single worker would
mean forking a parent that now runs threads, and a partly served service is harder to
reason about than one that is clearly down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import attrs

from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.runtime.service_runtime import ServiceRuntime

log = logging.getLogger(__name__)

# How long a worker may take to listen, and to stop once told.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class WorkerFailed(TeaclaveMAError):
    """A worker process could not start, or died while the service was running."""


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, which a container narrows)."""
    return len(os.sched_getaffinity(0))


@attrs.define(eq=False)
class _Worker:
    process: BaseProcess
    connection: Connection  # the parent's end of the worker's pipe


class WorkerPool:
    def __init__(self, runtime: ServiceRuntime, count: int, on_exit: Callable[[int], None]) -> None:
        """``on_exit``: called with each worker's pid once it has ended."""
        self.runtime = runtime
        self._on_exit = on_exit
        self.count = count
        self._workers: list[_Worker] = []
        self._send_lock = threading.Lock()
        self._reservation: socket.socket | None = None

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers if worker.process.pid]

    def start(self) -> tuple[str, int]:
        """Fork the workers and wait until each listens; raises ``OSError`` if the port
        cannot be had, ``WorkerFailed`` if a worker does not come up."""
        self._reservation = reserve_port(self.runtime.runtime.listen)
        address: tuple[str, int] = self._reservation.getsockname()[:2]
        context = multiprocessing.get_context("fork")  # the runtime is built once, here
        self.runtime.served_by(self.count)
        for number in range(self.count):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(
                    self.runtime,
                    address,
                    child_end,
                    [parent_end, *(w.connection for w in self._workers)],
                ),
                name=f"{self.runtime.image.service.name}-worker-{number}",
            )
            process.start()
            child_end.close()
            self._workers.append(_Worker(process, parent_end))
        for worker in self._workers:
            self._await_ready(worker)
        # Threads only now: every fork happened in a process running none.
        for worker in self._workers:
            threading.Thread(target=self._listen_to, args=(worker,), daemon=True).start()
        self.runtime.on_reload.append(self._broadcast)
        self.runtime.watch()
        return address

    def _await_ready(self, worker: _Worker) -> None:
        if worker.connection.poll(START_TIMEOUT):
            with contextlib.suppress(EOFError, OSError):
                if worker.connection.recv() == ("ready",):
                    return
        raise WorkerFailed(f"{worker.process.name} did not start (see its log above)")

    def _listen_to(self, worker: _Worker) -> None:
        """The floors a worker reports, sealed by the parent's clock."""
        clock = self.runtime.keeper.clock
        while True:
            try:
                message = worker.connection.recv()
            except (EOFError, OSError):
                return
            if clock is not None and message[0] == "floor":
                try:
                    clock.witness(message[1], f"{worker.process.name}'s reading of the clock")
                except TeaclaveMAError as exc:
                    log.error("%s", exc)

    def _broadcast(self) -> None:
        source = self.runtime.keeper.source
        assert source is not None  # a reload was just accepted
        with self._send_lock:
            for worker in self._workers:
                with contextlib.suppress(OSError):  # a dead worker is noticed by run()
                    worker.connection.send(("manifest", *source))

    def run(self, stopped: threading.Event) -> bool:
        """Wait until ``stopped`` is set (True) or a worker dies (False)."""
        sentinels = [worker.process.sentinel for worker in self._workers]
        while not stopped.is_set():
            ended = wait(sentinels, timeout=0.2)
            if ended and not stopped.is_set():
                dead = next(w for w in self._workers if w.process.sentinel in ended)
                dead.process.join()  # ended: collects its exit code at once
                log.error(
                    "%s (pid %s) exited with %s; stopping the service",
                    dead.process.name,
                    dead.process.pid,
                    dead.process.exitcode,
                )
                return False
        return True

    def stop(self) -> None:
        """End every worker: told so over its pipe (closing it alone would not reach the
        worker while our reader thread is blocked on it); SIGKILL if it does not stop."""
        with self._send_lock:
            for worker in self._workers:
                with contextlib.suppress(OSError):
                    worker.connection.send(("stop",))
        for worker in self._workers:
            worker.process.join(STOP_TIMEOUT)
            if worker.process.is_alive():
                log.error("%s did not stop; killing it", worker.process.name)
                worker.process.kill()
                worker.process.join()
            if worker.process.pid is not None:
                self._on_exit(worker.process.pid)
            worker.connection.close()
        if self._reservation is not None:
            self._reservation.close()
        self.runtime.stop()


def reserve_port(address: tuple[str, int]) -> socket.socket:
    """The port, bound with SO_REUSEPORT but never listening: it gets no connections, and
    a port 0 becomes one definite port that every worker then binds."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(address)
    except OSError:
        reservation.close()
        raise
    return reservation


def _worker_main(
    runtime: ServiceRuntime,
    address: tuple[str, int],
    connection: Connection,
    siblings: list[Connection],
) -> None:
    # The parent's ends of this worker's and earlier workers' pipes: held here, they would
    # hide the parent's death (or its closing them) from those workers.
    for sibling in siblings:
        sibling.close()
    # Ctrl-C and SIGHUP reach the parent, which stops or reloads every worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    send_lock = threading.Lock()

    def report_floor(floor: dt.datetime) -> None:
        with send_lock, contextlib.suppress(OSError):
            connection.send(("floor", floor))

    runtime.keeper.forward_state_to(report_floor)
    try:
        runtime.serve(address, reuse_port=True)
        with send_lock:
            connection.send(("ready",))
        _follow(runtime, connection)
    finally:
        runtime.stop()


def _follow(runtime: ServiceRuntime, connection: Connection) -> None:
    """Enforce each manifest the parent sends, verified again here; return when the parent
    says stop or is gone."""
    while True:
        try:
            message: tuple[Any, ...] = connection.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        try:
            verified = runtime.keeper.adopt(message[1], message[2])
        except TeaclaveMAError as exc:
            log.error("a manifest the parent accepted was refused here; keeping ours: %s", exc)
            continue
        runtime.observer.manifest_in_force(verified.version, verified.manifest.expires)
