"""Workers: attested handshakes per second served by one and by two server processes on one
port (SO_REUSEPORT, as ``teaclave-ma serve --workers N`` runs them), side by side in one run.

Each worker is a ``MutualTlsServer`` with the RA-TLS peer check, as in a service's worker
(whose parent takes no part in a handshake). The clients are the transport group's client
processes, each connecting, calling once and closing. They run on the same machine, so on
two cores they compete with the workers for the CPU: the note gives the cores the workers
and the clients used, which is what bounds the ratio here.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from benchmarks.common import Row, process_cpu_seconds, run_group
from benchmarks.transport import CONTEXT, ClientPool, Material, Sides, echo_service
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.rpc.server import MutualTlsServer
from teaclave_ma.runtime.workers import reserve_port


def serve_worker(material: Material, address: tuple[str, int], control: Connection) -> None:
    """A child process: one attested server on the shared port, until told to stop."""
    credentials, verifier = Sides(material, "server").make("attested")
    server = MutualTlsServer(
        echo_service(),
        credentials,
        verifier,
        inbound=["client"],
        address=address,
        limits=ServerLimits(idle_timeout=600.0),
        reuse_port=True,
    )
    control.send(server.start())
    control.recv()
    server.stop()


class Workers:
    """``count`` server processes listening on one port."""

    def __init__(self, material: Material, count: int) -> None:
        self._reservation = reserve_port(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._reservation.getsockname()[:2]
        self._workers = []
        for _ in range(count):
            ours, theirs = CONTEXT.Pipe()
            process = CONTEXT.Process(
                target=serve_worker, args=(material, self.address, theirs), daemon=True
            )
            process.start()
            self._workers.append((process, ours))
        for process, control in self._workers:
            if not control.poll(60):
                raise RuntimeError(f"a benchmark worker did not start ({process.exitcode})")
            control.recv()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _control in self._workers if process.pid is not None]

    def stop(self) -> None:
        for process, control in self._workers:
            control.send("stop")
            process.join(10)
            if process.is_alive():
                process.kill()
        self._reservation.close()


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def measure(
    workers: Workers, pool: ClientPool, clients: int, seconds: float
) -> tuple[float, float, float, list[str]]:
    """Handshakes per second, and the cores the workers and the clients used meanwhile."""
    before = cpu_seconds(workers.pids), cpu_seconds(pool.pids)
    start = time.monotonic()
    rate, failures = pool.rate("attested", workers.address, clients, seconds)
    elapsed = time.monotonic() - start
    after = cpu_seconds(workers.pids), cpu_seconds(pool.pids)
    return (
        rate,
        (after[0] - before[0]) / elapsed,
        (after[1] - before[1]) / elapsed,
        failures,
    )


def rows(smoke: bool) -> list[Row]:
    clients, seconds, repetitions = (4, 0.3, 1) if smoke else (16, 3.0, 5)
    with tempfile.TemporaryDirectory(prefix="teaclave-ma-bench-") as directory:
        material = Material.create(Path(directory))
        pool = ClientPool(material, 2 if smoke else 4)
        groups = {count: Workers(material, count) for count in (1, 2)}
        samples: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
        failures: list[str] = []
        try:
            for repetition in range(repetitions):
                # Alternate which goes first, so neither always follows the other.
                for count in (1, 2) if repetition % 2 == 0 else (2, 1):
                    rate, server_cores, client_cores, failed = measure(
                        groups[count], pool, clients, seconds
                    )
                    samples[count].append((rate, server_cores, client_cores))
                    failures += failed
        finally:
            for group in groups.values():
                group.stop()
            pool.close()
    median = {count: statistics.median(s[0] for s in samples[count]) for count in (1, 2)}
    # Handshakes per second of the workers' CPU: equal for 1 and 2 workers means the
    # workers scale with the cores they get, whatever the clients leave them.
    note = "; ".join(
        f"{count} worker{'s' if count > 1 else ''}: workers "
        f"{statistics.median(s[1] for s in samples[count]):.2f} cores "
        f"({statistics.median(s[0] / max(s[1], 1e-6) for s in samples[count]):.0f} handshakes "
        f"per worker-core second), clients {statistics.median(s[2] for s in samples[count]):.2f}"
        for count in (1, 2)
    )
    note += f"; {clients} concurrent clients on this machine's cores"
    if failures:
        note += f"; {len(failures)} failed exchanges, e.g. {failures[0]}"
    return [
        Row(
            "attested handshakes per second, 2 workers on one port",
            median[2],
            "1 worker",
            median[1],
            ">= 1.7x on 2 cores",
            unit="hs/s",
            note=note,
        )
    ]


if __name__ == "__main__":
    run_group(rows)
