"""An SGX enclave and a TDX guest attest each other in one mutual RA-TLS handshake."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.identity import TdxIdentity
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected

RuntimeFactory = Callable[..., ServiceRuntime]


@pytest.fixture(scope="module")
def storage_td(deployment: SimulatedDeployment) -> str:
    """storage built to run as a TD of the simulated platform (the TEE is measured). TDX
    has no sealing key, so its service.yaml admits an unsealed state."""

    def unsealed(source: Path) -> None:
        with (source / "service.yaml").open("a") as service_yaml:
            service_yaml.write("state: {unsealed_ok: true}\n")

    source = deployment.variant_source("storage", "-td", unsealed)
    deployment.build("storage", source=source, tag="-td", tee="TDX")
    return "storage-td"


def manifest_with_tdx_storage(
    deployment: SimulatedDeployment, directory: Path
) -> tuple[Path, Path]:
    images = deployment.images
    entries = {
        "frontend": [images["frontend"].identity],
        "authentication": [images["authentication"].identity],
        "storage": [
            simulated_td_identity(images["storage-td"].identity)
        ],  # the manifest's tdx form
    }
    data = deployment.panel.manifest(entries, version=1)
    assert b"mr_td:" in data and b"rtmr0:" in data
    (directory / "manifest.yaml").write_bytes(data)
    deployment.panel.write_signatures(directory / "signatures", data, by=["alice", "carol"])
    return directory / "manifest.yaml", directory / "signatures"


def test_sgx_frontend_and_tdx_storage_attest_each_other(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, tmp_path: Path, storage_td: str
) -> None:
    manifest, signatures = manifest_with_tdx_storage(deployment, tmp_path)
    storage = runtimes(storage_td, manifest=manifest, signatures=signatures)
    address = storage.start()
    assert isinstance(storage.self_identity(), TdxIdentity)
    frontend = runtimes(
        "frontend",
        manifest=manifest,
        signatures=signatures,
        storage=address,
        authentication=address,
    )
    client = frontend.context.client("storage")
    assert client.call("put", key="k", value="from an SGX enclave to a TD") is True
    assert client.call("get", key="k") == "from an SGX enclave to a TD"
    peer = client.peer
    assert peer is not None and isinstance(peer.identity, TdxIdentity)
    assert peer.identity == simulated_td_identity(deployment.images[storage_td].identity)
    assert peer.describe().startswith("storage (mr_td ")


def test_a_tdx_guest_is_refused_where_the_manifest_lists_an_sgx_enclave(
    runtimes: RuntimeFactory, storage_td: str
) -> None:
    storage_as_td = runtimes(storage_td)  # the shared manifest has SGX entries only
    address = storage_as_td.start()
    frontend = runtimes("frontend", storage=address, authentication=address)
    with pytest.raises(PeerRejected) as caught:
        frontend.context.client("storage").call("keys")
    assert "the peer is a TDX guest; this is an SGX entry" in str(caught.value)
    client = PeerClient("storage", address, frontend.credentials, frontend.verifier)
    with pytest.raises(PeerRejected, match="not accepted for service 'storage'"):
        client.call("keys")
