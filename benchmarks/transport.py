"""Transport: mutual RA-TLS side by side with plain mutual TLS 1.3, on the same server and
client code (``MutualTlsServer``, ``MutualTlsClient``), all on 127.0.0.1.

The attested side is what services run: RA-TLS certificates from the simulated platform,
checked by ``PeerVerifier`` against a manifest. The plain side presents ordinary
certificates issued by one CA and checks the peer's chain to that CA, its validity and its
name. Servers run in a child process (one process holds both servers, so they share the
machine's state); latency rows are measured from this process, the rate curve from
several client processes.
"""

from __future__ import annotations

import datetime as dt
import functools
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from benchmarks.common import Row, median_ms, process_cpu_seconds, run_group
from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.attester import SimulatedAttester
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.sim import pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.errors import VerificationError
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.formats.trust import TrustFile
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc.client import MutualTlsClient
from teaclave_ma.rpc.server import MutualTlsServer
from teaclave_ma.rpc.service import Service
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.transport.credentials import (
    CredentialSource,
    FixedCredentials,
    RotatingCredentials,
    TlsCredentials,
    utc_now,
)
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerAuthenticator, make_context
from teaclave_ma.trust.manifest_trust import AcceptedVersion, ManifestTrust, VerifiedManifest

T = TypeVar("T")
Mode = Literal["attested", "plain"]
MODES: tuple[Mode, ...] = ("attested", "plain")
IDENTITIES = {
    "server": SgxIdentity(b"\x51" * 32, b"\x52" * 32, isv_prod_id=7, isv_svn=1, debug=False),
    "client": SgxIdentity(b"\x53" * 32, b"\x52" * 32, isv_prod_id=8, isv_svn=1, debug=False),
}
CERTIFICATE_LIFETIME = dt.timedelta(hours=2)


# --- the plain side: ordinary CA-issued certificates, checked the ordinary way -------------


@attrs.frozen
class CaPeer:
    """A peer whose certificate chains to the benchmark CA and names ``service``."""

    service: str
    not_after: dt.datetime

    def describe(self) -> str:
        return f"{self.service} (CA-issued certificate)"


class CaVerifier:
    """Plain mutual TLS: the peer's certificate must chain to ``ca``, be within its
    validity, carry the right extended key usage and name one of the expected services
    (as a DNS subject alternative name). Chain building and those checks are done by
    ``cryptography``'s RFC 5280 verifier."""

    def __init__(self, ca: x509.Certificate, *, peer_role: Literal["client", "server"]) -> None:
        self._store = verification.Store([ca])
        self._peer_role = peer_role

    def verify(self, certificate: bytes, services: Sequence[str]) -> CaPeer:
        if not services:
            raise VerificationError("peer_name", "no service is allowed on this edge")
        try:
            leaf = x509.load_der_x509_certificate(certificate)
        except ValueError as exc:
            raise VerificationError("ca_chain", f"unreadable peer certificate: {exc}") from exc
        builder = verification.PolicyBuilder().store(self._store).time(dt.datetime.now(dt.UTC))
        if self._peer_role == "server":
            return self._server(builder, leaf, services)
        try:
            names = builder.build_client_verifier().verify(leaf, []).subjects or []
        except verification.VerificationError as exc:
            raise VerificationError("ca_chain", f"client certificate refused: {exc}") from exc
        named = {name.value for name in names if isinstance(name, x509.DNSName)}
        for service in services:
            if service in named:
                return CaPeer(service, leaf.not_valid_after_utc)
        raise VerificationError(
            "peer_name", f"the client certificate names none of {', '.join(services)}"
        )

    @staticmethod
    def _server(
        builder: verification.PolicyBuilder, leaf: x509.Certificate, services: Sequence[str]
    ) -> CaPeer:
        """A server certificate is checked for the name the client meant to reach."""
        refusals = []
        for service in services:
            try:
                builder.build_server_verifier(x509.DNSName(service)).verify(leaf, [])
            except verification.VerificationError as exc:
                refusals.append(f"as {service}: {exc}")
                continue
            return CaPeer(service, leaf.not_valid_after_utc)
        raise VerificationError("ca_chain", f"server certificate refused {'; '.join(refusals)}")

    def recheck(self, peer: CaPeer) -> None:
        if dt.datetime.now(dt.UTC) >= peer.not_after:
            raise VerificationError("validity", f"{peer.service}'s certificate has expired")


def create_ca() -> tuple[bytes, bytes]:
    """The benchmark CA: its private key and certificate, as PEM (to hand to processes)."""
    key = pki.new_key()
    now = dt.datetime.now(dt.UTC)
    certificate = pki.issue(
        "teaclave-ma benchmark CA",
        key,
        None,
        key,
        ca=True,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=1),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def issue(
    ca_key_pem: bytes, ca_pem: bytes, service: str, *, now: dt.datetime | None = None
) -> TlsCredentials:
    """A P-256 key and a certificate for ``service`` from the CA, usable on both ends,
    valid from ``now`` (a minute earlier) for ``CERTIFICATE_LIFETIME``."""
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = pki.new_key()
    now = now or dt.datetime.now(dt.UTC)
    certificate = pki.issue(
        service,
        key,
        x509.load_pem_x509_certificate(ca_pem),
        ca_key,
        ca=False,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + CERTIFICATE_LIFETIME,
        extensions=[
            x509.SubjectAlternativeName([x509.DNSName(service)]),
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
        ],
    )
    return TlsCredentials(key, certificate)


# --- what every process builds from the same material ---------------------------------------


class FixedManifest:
    """One manifest in force, compared with peers as a service's keeper compares them."""

    def __init__(self, trust: TrustFile, manifest: VerifiedManifest) -> None:
        self._trust = ManifestTrust(trust)
        self._trust.commit(manifest)

    def current(self, now: dt.datetime | None = None) -> VerifiedManifest:
        return self._trust.require_current(now or utc_now())

    def check_peer(
        self, service: str, claimed: AcceptedVersion, now: dt.datetime | None = None
    ) -> None:
        self._trust.check_peer(service, claimed, now or utc_now())


@attrs.frozen
class Material:
    """Everything a server or client process needs, in picklable form."""

    platform_dir: str
    trust: TrustFile
    manifest: VerifiedManifest
    ca_key_pem: bytes
    ca_pem: bytes

    @classmethod
    def create(cls, directory: Path) -> Material:
        platform = SimulatedPlatform.create()
        platform.save(directory)
        panel = AuditorPanel()
        data = panel.manifest({name: [identity] for name, identity in IDENTITIES.items()})
        manifest = ManifestTrust(panel.trust).check(data, panel.sign(data), dt.datetime.now(dt.UTC))
        return cls(str(directory), panel.trust, manifest, *create_ca())


Side = tuple[CredentialSource, PeerAuthenticator[Any]]


class Sides:
    """One process's credentials and peer checks, per mode; ``role`` is "server" or "client"."""

    def __init__(self, material: Material, role: Literal["client", "server"]) -> None:
        self.material = material
        self.role = role
        self.platform = SimulatedPlatform.load(Path(material.platform_dir))
        self._collateral = Collateral.from_json(self.platform.collateral_json())

    def attested_credentials(self) -> RotatingCredentials:
        """New RA-TLS credentials (a new key, certificate and quote), issued now."""
        credentials = RotatingCredentials(
            SimulatedAttester(self.platform, IDENTITIES[self.role]),
            self.role,
            manifest=lambda: self.material.manifest.accepted,
            lifetime=CERTIFICATE_LIFETIME,
        )
        credentials.current()
        return credentials

    def attested_verifier(self) -> PeerVerifier:
        """A new RA-TLS peer check, with an empty verified-certificate cache."""
        anchor = TrustAnchor.for_root(self.platform.root_certificate_der, "simulated root")
        return PeerVerifier(
            FixedManifest(self.material.trust, self.material.manifest), anchor, self._by_quote
        )

    def _by_quote(self, _quote: object) -> Collateral:
        return self._collateral

    def make(self, mode: Mode) -> Side:
        if mode == "attested":
            return self.attested_credentials(), self.attested_verifier()
        credentials = issue(self.material.ca_key_pem, self.material.ca_pem, self.role)
        peer_role: Literal["client", "server"] = "client" if self.role == "server" else "server"
        verifier = CaVerifier(
            x509.load_pem_x509_certificate(self.material.ca_pem), peer_role=peer_role
        )
        return FixedCredentials(credentials), verifier


def echo_service() -> Service:
    service = Service("server")

    @service.handler()
    def echo(peer: object, value: object) -> object:
        return value

    return service


# --- the server process -----------------------------------------------------------------------


def serve(material: Material, modes: Sequence[Mode], control: Connection) -> None:
    """A child process: one server per mode; sends their addresses, serves until told to stop."""
    sides = Sides(material, "server")
    # The benchmark holds connections open while it measures; the default idle deadline
    # could close some of a thousand before the last one is set up on a loaded machine.
    limits = ServerLimits(idle_timeout=600.0)
    servers: dict[Mode, MutualTlsServer[Any]] = {}
    for mode in modes:
        credentials, verifier = sides.make(mode)
        servers[mode] = MutualTlsServer(
            echo_service(),
            credentials,
            verifier,
            inbound=["client"],
            address=("127.0.0.1", 0),
            limits=limits,
        )
    control.send({mode: server.start() for mode, server in servers.items()})
    control.recv()
    for server in servers.values():
        server.stop()


def machine_busy() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (every process, ours or not)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


@attrs.frozen
class CpuUse:
    """Cores used over a stretch of time: by the server, by the clients, by the machine."""

    server: float
    clients: float
    machine: float

    def describe(self) -> str:
        return (
            f"server {self.server:.2f} cores, clients {self.clients:.2f}, "
            f"whole machine {self.machine:.2f} of {os.cpu_count()}"
        )


class CpuMeter:
    def __init__(self, server: int, clients: Sequence[int]) -> None:
        self._pids = (server, *clients)

    def measure(self, function: Callable[[], T]) -> tuple[T, CpuUse]:
        before = [process_cpu_seconds(pid) for pid in self._pids]
        busy, total = machine_busy()
        start = time.monotonic()
        result = function()
        elapsed = time.monotonic() - start
        after = [process_cpu_seconds(pid) for pid in self._pids]
        busy_after, total_after = machine_busy()
        used = [(b - a) / elapsed for a, b in zip(before, after, strict=True)]
        machine = (busy_after - busy) / max(1, total_after - total) * (os.cpu_count() or 1)
        return result, CpuUse(used[0], sum(used[1:]), machine)


@attrs.define
class ServerProcess:
    process: multiprocessing.process.BaseProcess
    control: Connection
    addresses: dict[Mode, tuple[str, int]]

    @classmethod
    def start(cls, material: Material, modes: Sequence[Mode]) -> ServerProcess:
        ours, theirs = CONTEXT.Pipe()
        process = CONTEXT.Process(target=serve, args=(material, modes, theirs), daemon=True)
        process.start()
        deadline = time.monotonic() + 60
        while not ours.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the benchmark server did not start ({process.exitcode})")
        return cls(process, ours, ours.recv())

    def resident_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kilobytes = next(
            line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")
        )
        return int(kilobytes) / 1024

    def stop(self) -> None:
        self.control.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


CONTEXT = multiprocessing.get_context("spawn")


# --- client processes for the rate curve ------------------------------------------------------


@attrs.frozen
class Burst:
    """Connect, call once and close, in ``threads`` threads until ``end``; count the
    exchanges completed between ``start`` and ``end`` (monotonic clock, shared by processes)."""

    mode: Mode
    address: tuple[str, int]
    threads: int
    start: float
    end: float


def client_worker(material: Material, control: Connection) -> None:
    sides = Sides(material, "client")
    made = {mode: sides.make(mode) for mode in MODES}
    while (burst := control.recv()) is not None:
        control.send(run_burst(burst, *made[burst.mode]))


def run_burst(
    burst: Burst, credentials: CredentialSource, verifier: PeerAuthenticator[Any]
) -> tuple[int, list[str]]:
    counts = [0] * burst.threads
    failures: list[str] = []

    def loop(index: int) -> None:
        client = MutualTlsClient("server", burst.address, credentials, verifier, timeout=30)
        while time.monotonic() < burst.end:
            try:
                client.call("echo", value=index)
            except Exception as exc:  # reported in the row's note, never hidden
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                client.close()
            if burst.start <= time.monotonic() <= burst.end:
                counts[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(burst.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), failures


class ClientPool:
    def __init__(self, material: Material, size: int) -> None:
        self._workers = []
        for _ in range(size):
            ours, theirs = CONTEXT.Pipe()
            process = CONTEXT.Process(target=client_worker, args=(material, theirs), daemon=True)
            process.start()
            self._workers.append((process, ours))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _control in self._workers if process.pid is not None]

    def rate(
        self, mode: Mode, address: tuple[str, int], clients: int, seconds: float
    ) -> tuple[float, list[str]]:
        """Exchanges per second with ``clients`` concurrent clients spread over the pool."""
        workers = self._workers[:clients]
        start = time.monotonic() + 0.5  # every thread is connecting by then
        end = start + seconds
        for index, (_process, control) in enumerate(workers):
            threads = clients // len(workers) + (index < clients % len(workers))
            control.send(Burst(mode, address, threads, start, end))
        total, failures = 0, []
        for _process, control in workers:
            count, failed = control.recv()
            total += count
            failures += failed
        return total / seconds, failures

    def close(self) -> None:
        for process, control in self._workers:
            control.send(None)
            process.join(10)


# --- the rows -------------------------------------------------------------------------------


def exchange(client: MutualTlsClient[Any]) -> None:
    """Connection set-up to first RPC answered: connect, call once, close."""
    try:
        client.call("echo", value=1)
    finally:
        client.close()


def in_turn(names: Sequence[str], repetition: int) -> list[str]:
    """``names`` in a different order each repetition, so neither side always goes first
    (right after the other, or after a pause) while the machine's load drifts."""
    shift = repetition % len(names)
    ordered = list(names[shift:]) + list(names[:shift])
    return ordered if repetition % 2 == 0 else ordered[::-1]


def interleaved(functions: dict[str, Callable[[], object]], repetitions: int) -> dict[str, float]:
    """Median milliseconds of each function, measured in turn so noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for repetition in range(repetitions):
        for name in in_turn(list(functions), repetition):
            samples[name].append(median_ms(functions[name], 1))
    return {name: statistics.median(values) for name, values in samples.items()}


def handshake_rows(server: ServerProcess, sides: Sides, repetitions: int) -> list[Row]:
    def client(side: Side, mode: Mode) -> MutualTlsClient[Any]:
        return MutualTlsClient("server", server.addresses[mode], *side)

    # As a service's client does, plain and warm keep their client object (and so its TLS
    # context) and connect anew on every call here, since each exchange closes.
    clients = {"plain": client(sides.make("plain"), "plain")}
    clients["warm"] = client(sides.make("attested"), "attested")
    exchange(clients["warm"])  # both ends now have the other's certificate cached
    samples: dict[str, list[float]] = {"plain": [], "warm": [], "cold": [], "context": []}
    for repetition in range(repetitions):
        # Prepared untimed: a new key, certificate and quote with its TLS context (built
        # once per certificate generation, as a service does at start and at a rotation),
        # and a new cache, so both ends verify each other's quote in full.
        credentials = sides.attested_credentials()
        clients["cold"] = client((credentials, sides.attested_verifier()), "attested")
        clients["cold"].prepare()
        for name in in_turn(("plain", "warm", "cold"), repetition):
            samples[name].append(median_ms(functools.partial(exchange, clients[name]), 1))
        build = functools.partial(make_context, credentials.current(), server=False)
        samples["context"].append(median_ms(build, 1))
    plain_ms, warm_ms, cold_ms, context_ms = (
        statistics.median(samples[name]) for name in ("plain", "warm", "cold", "context")
    )
    return [
        Row(
            "mutual RA-TLS handshake to first RPC answered",
            warm_ms,
            "plain mTLS 1.3",
            plain_ms,
            "at most 1.3x",
            note="new TCP connection and handshake each time; the server's and client's "
            "verified-certificate caches hold the peer (seen before)",
        ),
        Row(
            "mutual RA-TLS handshake, first contact (peer certificate caches cold)",
            cold_ms,
            "plain mTLS 1.3",
            plain_ms,
            "at most 1.3x",
            note=f"{cold_ms / warm_ms:.2f}x a peer seen before: a new client key, certificate and quote each "
            "time, so both ends verify the other's quote in full, at the same time (collateral "
            "and PCK chain checks stay cached: same platform); the client's TLS context for "
            f"its new certificate ({context_ms:.2f} ms, once per certificate generation) is "
            "built beforehand, as at a service's start or rotation",
        ),
    ]


def round_trip_row(server: ServerProcess, sides: Sides, repetitions: int, calls: int) -> Row:
    clients = {
        mode: MutualTlsClient("server", server.addresses[mode], *sides.make(mode)) for mode in MODES
    }
    for client in clients.values():
        client.call("echo", value=0)  # connected and verified before timing

    def batch(client: MutualTlsClient[Any]) -> Callable[[], object]:
        return lambda: [client.call("echo", value=i) for i in range(calls)]

    times = interleaved({mode: batch(client) for mode, client in clients.items()}, repetitions)
    for client in clients.values():
        client.close()
    attested, plain = (calls / times[mode] * 1000 for mode in MODES)
    return Row(
        "RPC round trips on an established connection",
        attested,
        "plain mTLS 1.3",
        plain,
        "at least 0.95x",
        unit="rpc/s",
        note=f"median of {repetitions} batches of {calls} sequential calls; attested re-checks "
        "the peer against the manifest before each request",
    )


def memory_row(material: Material, sides: Sides, connections: int, repetitions: int) -> Row:
    side = sides.make("attested")
    samples, baselines = [], []
    for _ in range(repetitions):
        server = ServerProcess.start(material, ["attested"])
        try:
            baselines.append(server.resident_mb())
            clients = [
                MutualTlsClient("server", server.addresses["attested"], *side)
                for _ in range(connections)
            ]
            for client in clients:
                client.call("echo", value=1)
            samples.append(server.resident_mb())
            for client in clients:
                client.close()
        finally:
            server.stop()
    resident, baseline = statistics.median(samples), statistics.median(baselines)
    return Row(
        f"server with {connections:,} concurrent attested connections",
        resident,
        target="under 200 MB",
        unit="MB",
        note=f"server VmRSS with every connection open after one RPC; {baseline:.0f} MB before "
        f"the first, so {(resident - baseline) * 1024 / connections:.0f} KB per connection "
        f"(median of {repetitions} fresh server processes)",
    )


def curve_rows(
    server: ServerProcess, pool: ClientPool, points: Sequence[int], seconds: float, repetitions: int
) -> list[Row]:
    assert server.process.pid is not None
    meter = CpuMeter(server.process.pid, pool.pids)
    rates: dict[tuple[Mode, int], float] = {}
    use: dict[tuple[Mode, int], CpuUse] = {}  # of the repetition with the median rate
    failures: list[str] = []
    for clients in points:
        samples: dict[Mode, list[tuple[float, CpuUse]]] = {mode: [] for mode in MODES}
        for _ in range(repetitions):
            for mode in MODES:
                address = server.addresses[mode]
                (rate, failed), cpu = meter.measure(
                    functools.partial(pool.rate, mode, address, clients, seconds)
                )
                samples[mode].append((rate, cpu))
                failures += failed
        for mode in MODES:
            ordered = sorted(samples[mode], key=lambda sample: sample[0])
            rates[mode, clients], use[mode, clients] = ordered[len(ordered) // 2]
    bends = {mode: where_it_bends([rates[mode, n] for n in points], points) for mode in MODES}
    summary = (
        f"; the rate stops growing at {bends['attested']} concurrent clients attested, "
        f"{bends['plain']} plain"
    )
    if failures:
        summary += f"; {len(failures)} failed exchanges, e.g. {failures[0]}"
    return [
        Row(
            f"handshakes per second, {clients} concurrent client{'s' if clients > 1 else ''}",
            rates["attested", clients],
            "plain mTLS 1.3",
            rates["plain", clients],
            "the curve, and where it bends",
            unit="hs/s",
            note=cpu_note(use, rates, clients) + (summary if clients == points[-1] else ""),
        )
        for clients in points
    ]


def cpu_note(
    use: dict[tuple[Mode, int], CpuUse], rates: dict[tuple[Mode, int], float], clients: int
) -> str:
    """What each handshake cost the server in CPU, and how busy the machine was."""
    per = {mode: use[mode, clients].server / rates[mode, clients] * 1000 for mode in MODES}
    attested = use["attested", clients]
    return (
        f"server CPU per handshake {per['attested']:.2f} ms attested, {per['plain']:.2f} ms "
        f"plain; attested run: {attested.describe()}"
    )


def where_it_bends(rates: Sequence[float], points: Sequence[int]) -> int:
    """The first point after which adding clients gains less than a tenth in rate."""
    for index in range(len(points) - 1):
        if rates[index + 1] < rates[index] * 1.1:
            return points[index]
    return points[-1]


def rows(smoke: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="teaclave-ma-bench-") as directory:
        material = Material.create(Path(directory))
        sides = Sides(material, "client")
        pool = ClientPool(material, 2 if smoke else 4)
        server = ServerProcess.start(material, MODES)
        try:
            result = handshake_rows(server, sides, 5 if smoke else 40)
            result.append(round_trip_row(server, sides, 3 if smoke else 40, 20 if smoke else 100))
            result.append(memory_row(material, sides, 20 if smoke else 1000, 1 if smoke else 3))
            points = (1, 8) if smoke else (1, 8, 64, 256)
            result += curve_rows(server, pool, points, 0.3 if smoke else 2.0, 1 if smoke else 3)
        finally:
            server.stop()
            pool.close()
        return result


if __name__ == "__main__":
    run_group(rows)
