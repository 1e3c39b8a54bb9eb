"""Load test (a script, not a CI gate): many attested clients against the example services.

``python -m benchmarks.load [--clients 200] [--seconds 60] [--stalled 50] [--json FILE]``

Builds the example services on a simulated platform and starts ``kms``, ``storage``,
``authentication`` and ``frontend`` as processes on loopback, as the demo does. Then
``--clients`` attested clients (threads spread over ``--workers`` processes, each client
with its own mutual RA-TLS connection) call the frontend in a loop, alternately ``put`` and
``get``, so every call goes frontend -> authentication -> storage. Two phases of
``--seconds`` each: the clients alone, and the clients while ``--stalled`` connections to
the frontend stay open without ever starting the TLS handshake (each one reopened as soon as
the server drops it). The phases alternate in slices of about ``--slice`` seconds, so that
other load on the machine weighs on both alike. It reports RPCs completed, failures by
type, p50/p99 latency of each phase side by side, and the open file descriptors, threads
and RSS of every server process at the end (stalled connections still open).
Progress goes to stderr, the table to stdout, the figures to ``--json``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import secrets
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from benchmarks.common import process_cpu_seconds
from teaclave_ma.demo.processes import ServiceProcess, serve_command, start_service
from teaclave_ma.enclave.image import load_image
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment

ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = ROOT / "services"
BUILT = ("client", "frontend", "authentication", "storage", "kms")
# Start order: each service's outbound peers are already listening.
STARTED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kms", ()),
    ("storage", ()),
    ("authentication", ("storage", "kms")),
    ("frontend", ("authentication", "storage")),
)
PHASES = ("without_stalled", "with_stalled")
PASSWORD = "load test password"
CALL_TIMEOUT = 30.0
GAP = 1.0  # seconds between slices, for the stalled connections to be opened or closed


def progress(message: str) -> None:
    sys.stderr.write(f"[load {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@attrs.frozen
class WorkerSpec:
    """What a client process needs to attest itself and reach the frontend."""

    index: int
    clients: int
    image: Path
    config: Path
    manifest: Path
    signatures: Path
    frontend: tuple[str, int]


@attrs.define
class PhaseResult:
    latencies_ms: list[float] = attrs.field(factory=list)
    failures: collections.Counter[str] = attrs.field(factory=collections.Counter)


def _client_loop(
    client: PeerClient, token: str, key: str, windows: list[tuple[float, float]],
    results: list[PhaseResult],
) -> None:  # fmt: skip
    """Call the frontend back to back during each window, recording every call's outcome."""
    for (start, end), result in zip(windows, results, strict=True):
        time.sleep(max(0.0, start - time.time()))
        calls = 0
        while time.time() < end:
            began = time.perf_counter()
            try:
                if calls % 2 == 0:
                    client.call("put", token=token, key=key, value=f"value {calls}")
                else:
                    client.call("get", token=token, key=key)
            except TeaclaveMAError as exc:  # the client reconnects on its next call
                result.failures[type(exc).__name__] += 1
            except Exception as exc:  # counted, so that the report shows any escape
                result.failures[f"{type(exc).__name__} (not a library error)"] += 1
            else:
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
            calls += 1


def worker_main(spec: WorkerSpec, conn: multiprocessing.connection.Connection) -> None:
    """A client process: connect every client, report ready, run the phases it is sent."""
    config = parse_runtime_config(spec.config.read_bytes(), spec.config.parent)
    node = EnclaveNode(
        load_image(spec.image), config, spec.manifest, spec.signatures, initialize_state=True
    )
    clients = [
        PeerClient("frontend", spec.frontend, node.credentials, node.verifier, timeout=CALL_TIMEOUT)
        for _ in range(spec.clients)
    ]
    # One user per process: scrypt makes logins expensive, and they are not what is measured.
    user = f"load{spec.index}x{secrets.token_hex(4)}"
    clients[0].call("register", user=user, password=PASSWORD)
    token: str = clients[0].call("login", user=user, password=PASSWORD)["token"]
    for client in clients[1:]:
        client.connect()  # every client holds its own attested connection before timing
    conn.send("ready")
    windows: list[tuple[float, float]] = conn.recv()
    results = [[PhaseResult() for _ in windows] for _ in clients]
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(client, token, f"k{number}", windows, results[number]),
            daemon=True,
        )
        for number, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = []
    for phase in range(len(windows)):
        merged_phase = PhaseResult()
        for per_client in results:
            merged_phase.latencies_ms += per_client[phase].latencies_ms
            merged_phase.failures.update(per_client[phase].failures)
        merged.append((merged_phase.latencies_ms, dict(merged_phase.failures)))
    conn.send(merged)
    for client in clients:
        client.close()


class StalledClients:
    """Connections that never begin the TLS handshake; while held, each is reopened once
    the server drops it, so that ``count`` of them are open all the time."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.address = address
        self.count = count
        self.dropped_by_server = 0
        self.opened = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        for _ in range(self.count):
            self._open()
        self._thread = threading.Thread(target=self._hold, name="stalled-clients", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _hold(self) -> None:
        while not self._stop.is_set():
            for key, _events in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if sock.recv(4096):
                        continue  # the server said something (an alert); keep waiting
                self._selector.unregister(sock)
                sock.close()
                self.dropped_by_server += 1
                if not self._stop.is_set():
                    self._open()

    def stop(self) -> None:
        """Close them all (until the next ``start``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            self._selector.unregister(sock)
            sock.close()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def process_usage(pid: int) -> dict[str, Any]:
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return {
        "pid": pid,
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "rss_bytes": rss_kib * 1024,
        "cpu_seconds": process_cpu_seconds(pid),
    }


def prepare(root: Path) -> SimulatedDeployment:
    deployment = SimulatedDeployment.create(root, SERVICES_DIR)
    deployment.add_secret("token-key", ["authentication"])
    for name in BUILT:
        deployment.build(name)
    entries = {name: deployment.review(name) for name in BUILT}
    deployment.publish_manifest(entries, version=1, signers=["alice", "bob"])
    return deployment


def start_services(deployment: SimulatedDeployment) -> dict[str, ServiceProcess]:
    processes: dict[str, ServiceProcess] = {}
    try:
        for name, peers in STARTED:
            config = deployment.runtime_config(name, peers={p: processes[p].address for p in peers})
            command = serve_command(
                deployment.images[name].root,
                deployment.manifest_path,
                deployment.signatures_dir,
                config,
                initialize_state=True,
            )
            processes[name] = start_service(name, command, deployment.root / "logs" / f"{name}.log")
            if name == "kms":
                deployment.provision_kms(processes[name].address)
            progress(
                f"{name} listening on {processes[name].address[0]}:{processes[name].address[1]}"
            )
    except BaseException:
        for process in processes.values():
            process.stop()
        raise
    return processes


def phase_summary(
    latencies: list[float], failures: dict[str, int], seconds: float
) -> dict[str, Any]:
    return {
        "rpcs": len(latencies),
        "rpcs_per_second": len(latencies) / seconds,
        "failures": sum(failures.values()),
        "failures_by_type": dict(sorted(failures.items())),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    progress(f"building and reviewing {', '.join(BUILT)} in {root}")
    deployment = prepare(root)
    processes = start_services(deployment)
    context = multiprocessing.get_context("spawn")
    workers: list[
        tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]
    ] = []
    stalled = StalledClients(processes["frontend"].address, args.stalled)
    try:
        frontend = processes["frontend"].address
        count = max(1, min(args.workers, args.clients))
        for index in range(count):
            share = args.clients // count + (1 if index < args.clients % count else 0)
            spec = WorkerSpec(
                index=index,
                clients=share,
                image=deployment.images["client"].root,
                config=deployment.runtime_config(f"client-{index}", peers={"frontend": frontend}),
                manifest=deployment.manifest_path,
                signatures=deployment.signatures_dir,
                frontend=frontend,
            )
            ours, theirs = context.Pipe()
            worker = context.Process(target=worker_main, args=(spec, theirs), daemon=True)
            worker.start()
            workers.append((worker, ours))
        progress(f"connecting {args.clients} attested clients from {count} processes")
        for child, conn in workers:
            if not conn.poll(300) or conn.recv() != "ready":
                raise RuntimeError(f"client process {child.pid} did not get ready")
        # The phases alternate in slices, so that whatever else loads the machine weighs
        # on both alike; the last slice has the stalled connections, so they count at the end.
        slices = max(1, math.ceil(args.seconds / args.slice))
        length = args.seconds / slices
        start = time.time() + 1.0
        windows = [
            (start + i * (length + GAP), start + i * (length + GAP) + length)
            for i in range(2 * slices)
        ]
        for _child, conn in workers:
            conn.send(windows)
        progress(
            f"{2 * slices} slices of {length:g} s, alternately alone and with"
            f" {args.stalled} stalled connections to the frontend"
        )
        for number, (_start, end) in enumerate(windows):
            stalling = number % 2 == 1
            if stalling:
                stalled.start()
            time.sleep(max(0.0, end - time.time()))
            if number == len(windows) - 1:
                # Measured now, while every client and stalled connection is still open.
                servers = {name: process_usage(p.process.pid) for name, p in processes.items()}
            if stalling:
                stalled.stop()
            progress(f"slice {number + 1} of {len(windows)} done ({PHASES[number % 2]})")
        progress("collecting results")
        collected: list[list[tuple[list[float], dict[str, int]]]] = []
        for child, conn in workers:
            if not conn.poll(args.seconds + 120):
                raise RuntimeError(f"client process {child.pid} sent no results")
            collected.append(conn.recv())
    finally:
        stalled.stop()
        for child, _conn in workers:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
        for service in processes.values():
            service.stop()
    phases = {}
    for number, name in enumerate(PHASES):
        latencies: list[float] = []
        failures: collections.Counter[str] = collections.Counter()
        for per_worker in collected:
            for window in per_worker[number::2]:
                latencies += window[0]
                failures.update(window[1])
        phases[name] = phase_summary(latencies, dict(failures), args.seconds)
    return {
        "command": "python -m benchmarks.load " + " ".join(sys.argv[1:]),
        "clients": args.clients,
        "client_processes": len(workers),
        "stalled": args.stalled,
        "seconds_per_phase": args.seconds,
        "slices_per_phase": slices,
        "cpus": os.cpu_count(),
        "phases": phases,
        "stalled_connections": {
            "opened": stalled.opened,
            "dropped_by_server": stalled.dropped_by_server,
        },
        "servers": servers,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(report: dict[str, Any]) -> str:
    alone, stalled = (report["phases"][name] for name in PHASES)
    lines = [
        f"{report['clients']} attested clients ({report['client_processes']} processes) -> frontend"
        f" -> authentication -> storage, {report['seconds_per_phase']:g} s per phase"
        f" in {report['slices_per_phase']} alternating slices, {report['cpus']} CPUs",
        "",
        f"{'':<22}{'alone':>14}{'with ' + str(report['stalled']) + ' stalled':>18}",
    ]
    rows: list[tuple[str, str, Callable[[Any], str]]] = [
        ("RPCs completed", "rpcs", str),
        ("RPCs per second", "rpcs_per_second", lambda v: f"{v:.1f}"),
        ("failures", "failures", str),
        ("p50 latency (ms)", "p50_ms", _ms),
        ("p99 latency (ms)", "p99_ms", _ms),
    ]
    for label, key, show in rows:
        lines.append(f"{label:<22}{show(alone[key]):>14}{show(stalled[key]):>18}")
    for name, phase in (("alone", alone), ("with stalled", stalled)):
        for kind, count in phase["failures_by_type"].items():
            lines.append(f"  failure ({name}): {kind} x {count}")
    held = report["stalled_connections"]
    lines += [
        f"stalled connections opened {held['opened']}, dropped by the server"
        f" (handshake deadline) {held['dropped_by_server']}",
        "",
        f"{'server at the end':<22}{'pid':>8}{'open fds':>10}{'threads':>9}{'RSS MiB':>10}"
        f"{'CPU s':>8}",
    ]
    for name, usage in report["servers"].items():
        lines.append(
            f"{name:<22}{usage['pid']:>8}{usage['open_fds']:>10}{usage['threads']:>9}"
            f"{usage['rss_bytes'] / 2**20:>10.1f}{usage['cpu_seconds']:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=200, help="attested clients (default 200)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--stalled", type=int, default=50, help="never-handshaking connections")
    parser.add_argument(
        "--slice", type=float, default=10.0, help="length of each alternating slice (default 10)"
    )
    parser.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in this new directory and keep the logs"
    )
    args = parser.parse_args(argv)
    if (
        min(args.clients, args.workers) < 1
        or min(args.seconds, args.slice) <= 0
        or args.stalled < 0
    ):
        parser.error("--clients, --workers, --seconds and --slice must be positive")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: exists already (it would be replaced)")
    with contextlib.ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory())) / "load"
        report = run(args, root)
    sys.stdout.write(render(report) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
