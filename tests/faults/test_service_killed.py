"""Fault: a service process is killed with SIGKILL in the middle of an RPC.

The behaviour: the caller gets a ``TransportError`` (the library's own, typed), neither a
hang nor a socket or OpenSSL exception, and so does every call while the service is down.
Once the service is started again on the same address, the same ``PeerClient`` connects
with a new attested handshake (the new process has a new key and certificate) and the
call succeeds.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from teaclave_ma.demo.processes import ServiceProcess, serve_command, start_service
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import TransportError
from tests.helpers import wait_until

SLEEPER = {
    "service.yaml": """\
name: sleeper
entrypoint: sleeper_service:build
enclave:
  isv_prod_id: 21
  isv_svn: 1
inbound: [caller]
outbound: []
""",
    "sleeper_service.py": '''\
"""Answers ping; block never answers, and says so in a file first."""

import threading

from teaclave_ma.rpc.service import Service


def build(context):
    service = Service(context.name)

    @service.handler()
    def ping(peer):
        return "pong"

    @service.handler()
    def block(peer):
        (context.state_dir / "blocked").touch()
        threading.Event().wait()

    return service
''',
}
CALLER = {
    "service.yaml": """\
name: caller
enclave:
  isv_prod_id: 22
  isv_svn: 1
inbound: []
outbound: [sleeper]
""",
}
WAIT = 30.0  # a bound for the test, not a timing assertion: it only stops a hang


def write_service(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    root = tmp_path_factory.mktemp("service-killed")
    write_service(root / "services" / "sleeper", SLEEPER)
    write_service(root / "services" / "caller", CALLER)
    deployment = SimulatedDeployment.create(root / "deployment", root / "services")
    for name in ("sleeper", "caller"):
        deployment.build(name)
    entries = {name: deployment.review(name) for name in ("sleeper", "caller")}
    deployment.publish_manifest(entries, version=1, signers=["alice", "bob"])
    return deployment


def start_sleeper(deployment: SimulatedDeployment, port: int = 0) -> ServiceProcess:
    config = deployment.runtime_config("sleeper", listen_port=port)
    command = serve_command(
        deployment.images["sleeper"].root,
        deployment.manifest_path,
        deployment.signatures_dir,
        config,
        initialize_state=port == 0,  # the restart on a known port keeps its sealed state
    )
    return start_service("sleeper", command, deployment.root / "logs" / f"sleeper-{port}.log")


def test_a_killed_service_gives_a_typed_error_and_the_client_reconnects_after_restart(
    deployment: SimulatedDeployment,
) -> None:
    first = start_sleeper(deployment)
    host, port = first.address
    config_path = deployment.runtime_config("caller", peers={"sleeper": (host, port)})
    caller = EnclaveNode(
        deployment.images["caller"],
        parse_runtime_config(config_path.read_bytes(), config_path.parent),
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )
    client = caller.context.client("sleeper")
    second: ServiceProcess | None = None
    try:
        assert client.call("ping") == "pong"
        assert client.peer is not None
        first_certificate = client.peer.certificate_sha256

        outcome: list[BaseException] = []

        def blocked_call() -> None:
            try:
                client.call("block")
            except BaseException as exc:  # recorded for the assertions below
                outcome.append(exc)

        caller_thread = threading.Thread(target=blocked_call, daemon=True)
        caller_thread.start()
        marker = deployment.root / "run" / "sleeper" / "state" / "blocked"
        assert wait_until(marker.exists, WAIT)  # the request is inside the handler now
        marker.unlink()
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(WAIT)
        caller_thread.join(WAIT)
        assert not caller_thread.is_alive(), "the call hung after the service died"
        assert len(outcome) == 1 and type(outcome[0]) is TransportError, outcome

        with pytest.raises(TransportError, match="cannot connect to sleeper"):
            client.call("ping")  # nothing listens while the service is down

        second = start_sleeper(deployment, port)
        assert second.address == (host, port)
        assert client.call("ping") == "pong"  # the same client, a new attested connection
        assert client.peer is not None and client.peer.service == "sleeper"
        assert client.peer.certificate_sha256 != first_certificate
    finally:
        client.close()
        first.stop()
        if second is not None:
            second.stop()
