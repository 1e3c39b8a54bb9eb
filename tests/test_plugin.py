"""The pytest plugin as a service author uses it: a deployment, one fixture away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from teaclave_ma import Caller, Service
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.testing.deployment import SimulatedDeployment

SERVICES = Path(__file__).resolve().parents[1] / "services"


def runtime(deployment: SimulatedDeployment, name: str, **peers: tuple[str, int]) -> ServiceRuntime:
    path = deployment.runtime_config(name, peers=peers)
    config = parse_runtime_config(path.read_bytes(), path.parent)
    return ServiceRuntime(
        deployment.images[name],
        config,
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )


def test_make_deployment_runs_a_service_under_test(
    make_deployment: Callable[[Path], SimulatedDeployment],
) -> None:
    deployment = make_deployment(SERVICES)
    for name in ("storage", "frontend"):
        deployment.build(name)
    deployment.publish_manifest(
        {name: deployment.review(name) for name in ("storage", "frontend")},
        version=1,
        signers=["alice", "carol"],
    )
    storage = runtime(deployment, "storage")
    address = storage.start()
    try:
        frontend = runtime(deployment, "frontend", storage=address, authentication=address)
        client = PeerClient("storage", address, frontend.credentials, frontend.verifier)
        assert client.call("put", key="a", value="b") is True
        assert client.call("keys") == ["a"]
        client.close()
    finally:
        storage.stop()


def test_auditor_panel_fixtures(
    auditor_panel: AuditorPanel, make_auditor_panel: Callable[..., AuditorPanel]
) -> None:
    assert (len(auditor_panel.auditors), auditor_panel.threshold) == (3, 2)
    five = make_auditor_panel(count=5, threshold=3)
    assert (len(five.auditors), five.threshold) == (5, 3)
    assert len(five.sign(b"manifest")) == 3


def test_running_service_serves_a_directory_to_an_attested_client(
    running_service: Callable[[Path], PeerClient],
) -> None:
    client = running_service(SERVICES / "storage")
    assert client.call("put", key="k", value="v") is True
    assert client.call("keys") == ["k"]
    assert client.peer is not None and client.peer.service == "storage"


def test_fake_peer_makes_callers_for_handler_tests(fake_peer: Callable[..., Caller]) -> None:
    service = Service("echo")

    @service.handler()
    def who(peer: Caller) -> list[object]:
        return [peer.attested, peer.service]

    assert service.dispatch(fake_peer("frontend"), "who", {}) == [True, "frontend"]
    assert service.dispatch(fake_peer(attested=False), "who", {}) == [False, None]


def test_fixture_auditors_share_one_set_of_names(
    auditor_panel: AuditorPanel, make_auditor_panel: Callable[..., AuditorPanel]
) -> None:
    assert [a.name for a in auditor_panel.auditors] == ["alice", "bob", "carol"]
    assert [a.name for a in make_auditor_panel(count=4).auditors][:3] == ["alice", "bob", "carol"]
