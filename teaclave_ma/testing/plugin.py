"""pytest plugin (entry point ``pytest11``): fixtures for testing services built on teaclave-ma.

- ``running_service(service_dir)``: the service built, accepted by a manifest and served
  in-process on a simulated platform; an attested client of it (stopped afterwards).
- ``fake_peer(service=..., attested=...)``: a caller to pass to ``Service.dispatch`` when
  testing handlers without any network.
- ``auditor_panel``: three fake auditors (alice, bob, carol), threshold 2.
- ``make_auditor_panel(count, threshold)``: any other panel, named the same way.
- ``make_deployment(services_dir)``: a ``SimulatedDeployment`` in a fresh temporary
  directory (the same auditors, trust file, author key, simulated platform); build and run
  your services on it.
- ``interop_certificates``: the three CCC interoperability RA-TLS certificates (Gramine,
  Intel SGX SDK, rats-tls) by name; ``interop_certificate(name)``: one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from teaclave_ma.caller import connect
from teaclave_ma.errors import InputError
from teaclave_ma.formats.runtime_config import RuntimeConfig, parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.formats.strict import dump_yaml
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc.client import MutualTlsClient
from teaclave_ma.rpc.outside import Caller, UnattestedPeer
from teaclave_ma.runtime.service_runtime import EnclaveNode, ServiceRuntime
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.testing.deployment import AUDITORS, SimulatedDeployment
from teaclave_ma.transport.peer_verify import PeerIdentity

# The caller enclave ``running_service`` builds for a service without open inbound.
TEST_CALLER_PROD_ID = 0xFFF0
INTEROP_DIR = Path(__file__).resolve().parent / "data" / "interop"
# name -> producer; each file is ``<name>-cert.pem`` (data/interop/README.md says what each is).
INTEROP_PRODUCERS = {"gramine": "Gramine", "intel-sgxsdk": "Intel SGX SDK", "rats-tls": "rats-tls"}


@attrs.frozen
class InteropCertificate:
    """One of the CCC interoperability RA-TLS certificates, as its producer wrote it."""

    name: str  # "gramine", "intel-sgxsdk" or "rats-tls"
    producer: str
    tee: str  # the TEE its quote comes from
    path: Path
    pem: bytes


def load_interop_certificate(name: str) -> InteropCertificate:
    """The certificate ``name`` from the package data; ``InputError`` for any other name."""
    producer = INTEROP_PRODUCERS.get(name)
    if producer is None:
        raise InputError(
            "interop_certificate",
            f"no certificate {name!r} (known: {', '.join(INTEROP_PRODUCERS)})",
        )
    path = INTEROP_DIR / f"{name}-cert.pem"
    return InteropCertificate(name, producer, "SGX", path, path.read_bytes())


@pytest.fixture(scope="session")
def interop_certificates() -> dict[str, InteropCertificate]:
    """The three RA-TLS certificates of the CCC interoperability tests (Gramine, Intel SGX
    SDK, rats-tls; real SGX quotes of debug enclaves), by name: ``"gramine"``,
    ``"intel-sgxsdk"``, ``"rats-tls"``. Each gives ``producer``, ``tee``, ``path`` and the
    upstream ``pem`` bytes, unmodified (provenance in teaclave_ma/testing/data/interop)."""
    return {name: load_interop_certificate(name) for name in INTEROP_PRODUCERS}


@pytest.fixture
def interop_certificate() -> Callable[[str], InteropCertificate]:
    """``get(name)``: one certificate of ``interop_certificates``; an unknown name raises
    ``InputError`` listing the known ones."""
    return load_interop_certificate


def auditor_names(count: int) -> list[str]:
    """The deployment's auditors first, then numbered ones: one naming across fixtures."""
    return [*AUDITORS, *(f"auditor{i}" for i in range(len(AUDITORS), count))][:count]


@pytest.fixture
def auditor_panel() -> AuditorPanel:
    """Three fake auditors, alice, bob and carol, of whom two must sign."""
    return AuditorPanel(count=3, threshold=2, names=auditor_names(3))


@pytest.fixture
def make_auditor_panel() -> Callable[..., AuditorPanel]:
    """``make(count=3, threshold=2)``: a panel of fake auditors named as in ``auditor_panel``."""

    def make(count: int = 3, threshold: int = 2) -> AuditorPanel:
        return AuditorPanel(count=count, threshold=threshold, names=auditor_names(count))

    return make


@pytest.fixture
def make_deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[Path], SimulatedDeployment]:
    """``make(services_dir)``: a simulated deployment in a fresh temporary directory."""

    def make(services_dir: Path) -> SimulatedDeployment:
        return SimulatedDeployment.create(tmp_path_factory.mktemp("deployment"), Path(services_dir))

    return make


@pytest.fixture
def fake_peer() -> Callable[..., Caller]:
    """``make(service="frontend", attested=True)``: a caller for ``Service.dispatch`` in
    handler tests; its measurement is made up and its evidence never current."""

    def make(service: str = "frontend", *, attested: bool = True) -> Caller:
        if not attested:
            return UnattestedPeer()
        return PeerIdentity(
            service=service,
            identity=SgxIdentity(b"\x11" * 32, b"\x22" * 32, 1, 1, False),
            tcb_status="UpToDate",
            advisory_ids=(),
            manifest_version=1,
            certificate_sha256=b"\x00" * 32,
        )

    return make


RunningService = Callable[[Path], MutualTlsClient[PeerIdentity]]


@pytest.fixture
def running_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    """``start(service_dir)``: the service in ``service_dir`` built for a simulated
    platform, accepted by a manifest 2 of 3 auditors signed, and served in-process on
    loopback; returns an attested client of it. The caller is an enclave named after the
    first service of its ``inbound`` (built from a stub, so handlers see
    ``peer.service`` as that name); a service whose inbound is only ``{callers: any}``
    gets a client without a certificate. Everything stops when the test ends."""
    stops: list[Callable[[], None]] = []

    def start(service_dir: Path) -> MutualTlsClient[PeerIdentity]:
        service_dir = Path(service_dir)
        config = parse_service_config(
            (service_dir / "service.yaml").read_bytes(), str(service_dir / "service.yaml")
        )
        deployment = SimulatedDeployment.create(
            tmp_path_factory.mktemp("running"), service_dir.parent
        )
        deployment.build(config.name, source=service_dir)
        caller = config.inbound[0] if config.inbound else None
        if caller is not None:
            stub = deployment.root / "caller" / caller
            stub.mkdir(parents=True)
            (stub / "service.yaml").write_bytes(
                dump_yaml(
                    {
                        "name": caller,
                        "enclave": {"isv_prod_id": TEST_CALLER_PROD_ID, "isv_svn": 1},
                        "outbound": [config.name],
                    }
                )
            )
            deployment.build(caller, source=stub)
        names = [config.name, *([caller] if caller else [])]
        deployment.publish_manifest(
            {name: deployment.review(name) for name in names}, version=1, signers=AUDITORS[:2]
        )
        server = ServiceRuntime(
            deployment.images[config.name],
            _runtime(deployment, config.name, {}),
            deployment.manifest_path,
            deployment.signatures_dir,
            initialize_state=True,
        )
        address = server.start()
        stops.append(server.stop)
        if caller is None:
            client: MutualTlsClient[PeerIdentity] = connect(
                address,
                service=config.name,
                manifest=deployment.manifest_path,
                signatures=deployment.signatures_dir,
                trust=deployment.trust_path,
                simulated_platform=deployment.platform_dir,
            )
            stops.append(client.close)
            return client
        node = EnclaveNode(
            deployment.images[caller],
            _runtime(deployment, caller, {config.name: address}),
            deployment.manifest_path,
            deployment.signatures_dir,
            initialize_state=True,
        )
        stops.append(node.close)
        return node.context.client(config.name)

    yield start
    for stop in reversed(stops):
        stop()


def _runtime(
    deployment: SimulatedDeployment, name: str, peers: dict[str, tuple[str, int]]
) -> RuntimeConfig:
    path = deployment.runtime_config(name, peers=peers)
    return parse_runtime_config(path.read_bytes(), path.parent)
