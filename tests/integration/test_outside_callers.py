"""Callers outside any enclave, on a service that opens its inbound to them."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import teaclave_ma
from teaclave_ma.cli.main import main
from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.jsonrpc import INVALID_PARAMS, RpcError
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted
from tests.integration.conftest import RuntimeFactory

GREETER_YAML = """\
name: greeter
entrypoint: greeter_service:build
enclave: {isv_prod_id: 12, isv_svn: 1}
inbound: [frontend, {callers: any}]
"""
GREETER = """\
from teaclave_ma import Caller, Service, ServiceContext


def build(context: ServiceContext) -> Service:
    service = Service(context.name)

    @service.handler()
    def hello(peer: Caller, name: str, method: str = "plain") -> dict[str, object]:
        return {"attested": peer.attested, "service": peer.service, "greeting": f"hello {name}",
                "method": method}

    return service
"""


@pytest.fixture(scope="module")
def open_deployment(
    deployment: SimulatedDeployment, tmp_path_factory: pytest.TempPathFactory
) -> SimulatedDeployment:
    """The example deployment plus ``greeter``, open to unattested callers, in the manifest."""
    source = tmp_path_factory.mktemp("greeter") / "greeter"
    source.mkdir()
    (source / "service.yaml").write_text(GREETER_YAML)
    (source / "greeter_service.py").write_text(GREETER)
    deployment.build("greeter", source=source)
    names = ("frontend", "storage", "greeter")
    deployment.publish_manifest(
        {name: deployment.review(name) for name in names}, version=2, signers=["alice", "bob"]
    )
    return deployment


@pytest.fixture
def greeter(open_deployment: SimulatedDeployment, runtimes: RuntimeFactory) -> Iterator[str]:
    runtime = runtimes("greeter")
    host, port = runtime.start()
    yield f"{host}:{port}"


def files(deployment: SimulatedDeployment) -> dict[str, Path]:
    return {
        "manifest": deployment.manifest_path,
        "signatures": deployment.signatures_dir,
        "trust": deployment.trust_path,
        "simulated_platform": deployment.platform_dir,
    }


def test_inbound_parses_callers_any() -> None:
    config = parse_service_config(GREETER_YAML.encode(), "service.yaml")
    assert config.inbound == ("frontend",) and config.unattested_callers is True
    with pytest.raises(InputError, match=r"inbound\[1\]: expected a service name or"):
        parse_service_config(
            GREETER_YAML.replace("{callers: any}", "{callers: some}").encode(), "service.yaml"
        )


def test_an_outside_caller_verifies_and_calls_and_is_seen_unattested(
    open_deployment: SimulatedDeployment, greeter: str
) -> None:
    with teaclave_ma.connect(greeter, service="greeter", **files(open_deployment)) as client:
        assert client.peer is not None and client.peer.service == "greeter"
        answer = client.call("hello", name="ann", method="remote")  # a param named method
        assert answer == {
            "attested": False,
            "service": None,
            "greeting": "hello ann",
            "method": "remote",
        }
        with pytest.raises(RpcError) as bad:
            client.call("hello", name=5)
        assert bad.value.code == INVALID_PARAMS
        assert "parameter 'name' must be str, not an integer" in bad.value.message


def test_an_attested_caller_on_the_open_service_is_still_attested(
    open_deployment: SimulatedDeployment, greeter: str, runtimes: RuntimeFactory
) -> None:
    host, port = greeter.rsplit(":", 1)
    frontend = runtimes("frontend", storage=(host, 1), authentication=(host, 1))
    client = PeerClient("greeter", (host, int(port)), frontend.credentials, frontend.verifier)
    try:
        answer = client.call("hello", name="fe")
    finally:
        client.close()
    assert answer["attested"] is True and answer["service"] == "frontend"


def test_a_certificate_that_fails_is_refused_even_on_an_open_service(
    open_deployment: SimulatedDeployment, greeter: str, runtimes: RuntimeFactory
) -> None:
    host, port = greeter.rsplit(":", 1)
    storage = runtimes("storage")  # in the manifest, but not in greeter's inbound
    client = PeerClient("greeter", (host, int(port)), storage.credentials, storage.verifier)
    try:
        with pytest.raises(RefusedByPeer):
            client.call("hello", name="st")
    finally:
        client.close()


def test_a_mutual_service_refuses_a_client_without_certificate(
    open_deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    host, port = runtimes("storage").start()
    with pytest.raises(RefusedByPeer):
        client = teaclave_ma.connect(f"{host}:{port}", service="storage", **files(open_deployment))
        client.call("keys")


def test_the_caller_refuses_a_server_that_is_not_the_expected_service(
    open_deployment: SimulatedDeployment, greeter: str
) -> None:
    with pytest.raises(PeerRejected) as caught:
        teaclave_ma.connect(greeter, service="storage", **files(open_deployment))
    assert isinstance(caught.value.reason, IdentityNotAccepted)
    assert "it is the manifest's 'greeter'" in str(caught.value)


def test_one_event_loop_runs_100_concurrent_calls(
    open_deployment: SimulatedDeployment, greeter: str
) -> None:
    async def run() -> list[object]:
        client = await teaclave_ma.connect_async(
            greeter, service="greeter", **files(open_deployment)
        )
        async with client:
            calls = [client.call("hello", name=str(i)) for i in range(100)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(run())
    assert [a["greeting"] for a in answers] == [f"hello {i}" for i in range(100)]  # type: ignore[index]


def cli_files(deployment: SimulatedDeployment) -> list[str]:
    return [
        "--manifest", str(deployment.manifest_path),
        "--signatures", str(deployment.signatures_dir),
        "--trust", str(deployment.trust_path),
        "--simulated-platform", str(deployment.platform_dir),
    ]  # fmt: skip


def test_teaclave_ma_call(
    open_deployment: SimulatedDeployment, greeter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["call", greeter, "hello", "--param", "name=bo", "--param", 'method:="json"']
    code = main([*argv, "--expect", "greeter", *cli_files(open_deployment), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["service"] == "greeter"
    assert report["result"]["greeting"] == "hello bo" and report["result"]["method"] == "json"
    refused = main([*argv, "--expect", "storage", *cli_files(open_deployment)])
    assert refused == 1
    assert "it is the manifest's 'greeter'" in capsys.readouterr().err
    assert main(["call", greeter, "hello", "--param", "name", "--expect", "greeter",
                 *cli_files(open_deployment)]) == 2  # fmt: skip


def test_cert_fetch_then_an_ordinary_client_pins_it(
    open_deployment: SimulatedDeployment, greeter: str, tmp_path: Path
) -> None:
    out = tmp_path / "greeter.pem"
    fetch = ["cert", "fetch", greeter, "--out", str(out), *cli_files(open_deployment)]
    assert main([*fetch, "--expect", "greeter"]) == 0
    context = ssl.create_default_context(cadata=out.read_text())
    context.check_hostname = False  # the certificate names the service (CN), not the host
    request = {"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"name": "web"}}
    with httpx.Client(verify=context) as web:
        response = web.post(f"https://{greeter}/rpc", json=request)
    assert response.json()["result"]["greeting"] == "hello web"
    assert response.json()["result"]["attested"] is False


def test_cert_fetch_refuses_a_mismatched_server_before_writing(
    open_deployment: SimulatedDeployment, greeter: str, tmp_path: Path
) -> None:
    out = tmp_path / "storage.pem"
    code = main(
        ["cert", "fetch", greeter, "--out", str(out), "--expect", "storage",
         *cli_files(open_deployment)]
    )  # fmt: skip
    assert code == 1
    assert not out.exists()
