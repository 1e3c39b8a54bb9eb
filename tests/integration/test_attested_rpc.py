"""Services attesting each other over real sockets: every accept and refuse path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer

RuntimeFactory = Callable[..., ServiceRuntime]


@pytest.fixture
def chain(runtimes: RuntimeFactory) -> dict[str, tuple[str, int]]:
    """storage, authentication and frontend serving in this process."""
    kms = runtimes("kms").start()
    storage = runtimes("storage").start()
    authentication = runtimes("authentication", storage=storage, kms=kms).start()
    frontend = runtimes("frontend", authentication=authentication, storage=storage).start()
    return {"kms": kms, "storage": storage, "authentication": authentication, "frontend": frontend}


def test_client_reaches_storage_through_frontend_and_authentication(
    deployment: SimulatedDeployment, chain: dict[str, tuple[str, int]], runtimes: RuntimeFactory
) -> None:
    client = runtimes("client", frontend=chain["frontend"])
    frontend = client.context.client("frontend")
    assert frontend.call("register", user="ada", password="analytical engine") == {
        "registered": "ada"
    }
    token = frontend.call("login", user="ada", password="analytical engine")["token"]
    assert frontend.call("put", token=token, key="note", value="first program") == {"stored": True}
    assert frontend.call("get", token=token, key="note") == {"value": "first program"}
    peer = frontend.peer
    assert peer is not None
    assert peer.service == "frontend"
    assert peer.identity == deployment.images["frontend"].identity
    assert peer.manifest_version == 1


def test_storage_keeps_each_attested_caller_in_its_own_namespace(
    chain: dict[str, tuple[str, int]], runtimes: RuntimeFactory
) -> None:
    client = runtimes("client", frontend=chain["frontend"]).context.client("frontend")
    client.call("register", user="grace", password="compiler123")
    # authentication stored grace's record under its own namespace; frontend cannot see it.
    frontend = runtimes(
        "frontend", storage=chain["storage"], authentication=chain["authentication"]
    )
    frontend_as_storage_client = frontend.context.client("storage")
    assert frontend_as_storage_client.call("get", key="user/grace") is None
    assert frontend_as_storage_client.call("keys") == []


def test_server_refuses_a_valid_enclave_that_is_not_inbound(
    chain: dict[str, tuple[str, int]], runtimes: RuntimeFactory
) -> None:
    client = runtimes("client", frontend=chain["frontend"])
    direct = PeerClient("storage", chain["storage"], client.credentials, client.verifier)
    with pytest.raises(RefusedByPeer):
        direct.call("keys")
    direct.close()


def test_client_refuses_a_valid_enclave_of_another_service(
    chain: dict[str, tuple[str, int]], runtimes: RuntimeFactory
) -> None:
    client = runtimes("client", frontend=chain["frontend"])
    misdirected = PeerClient(
        "frontend", chain["authentication"], client.credentials, client.verifier
    )
    with pytest.raises(PeerRejected) as caught:
        misdirected.call("login", user="ada", password="analytical engine")
    message = str(caught.value)
    assert "is not accepted for service 'frontend' by manifest v1" in message
    assert caught.value.check == "manifest_identity"


def test_rebuilt_service_with_one_changed_line_is_refused(
    deployment: SimulatedDeployment, chain: dict[str, tuple[str, int]], runtimes: RuntimeFactory
) -> None:
    def change_one_line(source: Path) -> None:
        path = source / "frontend_service.py"
        path.write_text(path.read_text().replace("BAD_KEY = -32010", "BAD_KEY = -32011"))

    source = deployment.variant_source("frontend", "-one-line", change_one_line)
    image = deployment.build("frontend", source=source, tag="-one-line")
    assert image.identity.mr_enclave != deployment.images["frontend"].identity.mr_enclave
    tampered = runtimes(image, storage=chain["storage"], authentication=chain["authentication"])
    with pytest.raises(RefusedByPeer):
        tampered.context.client("storage").call("keys")


def test_debug_enclave_is_refused_when_the_manifest_accepts_only_production(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    def make_debug(source: Path) -> None:
        path = source / "service.yaml"
        path.write_text(path.read_text().replace("isv_svn: 1\n", "isv_svn: 1\n  debug: true\n"))

    source = deployment.variant_source("storage", "-debug", make_debug)
    image = deployment.build("storage", source=source, tag="-debug")
    assert image.identity.debug
    address = runtimes(image).start()
    frontend = runtimes("frontend", storage=address, authentication=address)
    with pytest.raises(PeerRejected) as caught:
        frontend.context.client("storage").call("keys")
    assert "debug" in str(caught.value).lower()
