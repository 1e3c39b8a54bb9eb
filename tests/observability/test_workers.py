"""``teaclave-ma serve --workers 2``: two processes on one port, one manifest, one health port.

Plays the operator and the host: connections spread over both workers (their pids come
back in the answers and in the metrics), a SIGHUP reload reaches both, SIGTERM leaves no
process, a killed worker stops the service with exit 1, and the health port says up/ready
and the manifest version only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from teaclave_ma.demo.processes import ServiceProcess, serve_command, start_service
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import RefusedByPeer
from tests.helpers import wait_until

ECHO = {
    "service.yaml": """\
name: echo
entrypoint: echo_service:build
enclave: {isv_prod_id: 31, isv_svn: 1}
inbound: [caller]
outbound: []
""",
    "echo_service.py": '''\
"""Answers with the pid of the worker that served the call."""

import os

from teaclave_ma.rpc.service import Service


def build(context):
    service = Service(context.name)

    @service.handler()
    def whoami(peer):
        return os.getpid()

    return service
''',
}


def _client(name: str) -> dict[str, str]:
    return {"service.yaml": f"name: {name}\nenclave: {{isv_prod_id: {40 + len(name)}, isv_svn: 1}}\n"
            f"inbound: []\noutbound: [echo]\n"}  # fmt: skip


WAIT = 30.0  # bounds a hang only; nothing here measures time
CONNECTIONS = 24  # all on one of two workers: a chance of 2 in 2**24 with SO_REUSEPORT's hash


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    root = tmp_path_factory.mktemp("workers")
    for name, files in {
        "echo": ECHO,
        "caller": _client("caller"),
        "other": _client("other"),
    }.items():
        (root / "services" / name).mkdir(parents=True)
        for file, text in files.items():
            (root / "services" / name / file).write_text(text)
    deployment = SimulatedDeployment.create(root / "deployment", root / "services")
    for name in ("echo", "caller", "other"):
        deployment.build(name)
    publish(deployment, version=1)
    return deployment


def publish(deployment: SimulatedDeployment, version: int) -> None:
    entries = {name: deployment.review(name) for name in ("echo", "caller", "other")}
    deployment.publish_manifest(entries, version=version, signers=["alice", "bob"])


@pytest.fixture
def service(deployment: SimulatedDeployment, tmp_path: Path) -> Iterator[ServiceProcess]:
    publish(deployment, version=1)
    config = deployment.runtime_config(f"echo-{tmp_path.name}")
    config.write_text(config.read_text() + "health: {listen: 127.0.0.1:0}\n")
    command = serve_command(
        deployment.images["echo"].root,
        deployment.manifest_path,
        deployment.signatures_dir,
        config,
        initialize_state=True,
        workers=2,
    )
    process = start_service("echo", command, tmp_path / "echo.log")
    try:
        yield process
    finally:
        process.stop()


def node(deployment: SimulatedDeployment, name: str, service: ServiceProcess) -> EnclaveNode:
    """A client enclave with a state of its own (each test starts from manifest v1)."""
    config = deployment.runtime_config(
        f"{name}-{service.log_path.parent.name}", peers={"echo": service.address}
    )
    return EnclaveNode(
        deployment.images[name],
        parse_runtime_config(config.read_bytes(), config.parent),
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=True,
    )


def fresh_call(caller: EnclaveNode, address: tuple[str, int], method: str = "whoami") -> object:
    """One call on a connection of its own: a new handshake each time."""
    client = PeerClient("echo", address, caller.credentials, caller.verifier)
    try:
        return client.call(method)
    finally:
        client.close()


def workers_of(process: ServiceProcess) -> set[int]:
    pid = process.process.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def health_base(process: ServiceProcess) -> str:
    match = re.search(r"health and metrics on (http://\S+)", process.log_path.read_text())
    assert match is not None, process.log_path.read_text()
    return match[1]


def scrape(process: ServiceProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample, by sample name: (labels, value)."""
    text = httpx.get(health_base(process) + "/metrics", timeout=WAIT).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def per_pid(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> dict[int, float]:
    return {int(labels["pid"]): value for labels, value in samples.get(name, [])}


def test_two_workers_share_the_port_and_both_serve(
    deployment: SimulatedDeployment, service: ServiceProcess
) -> None:
    workers = workers_of(service)
    assert len(workers) == 2 and service.process.pid not in workers
    caller = node(deployment, "caller", service)
    try:
        answers = {fresh_call(caller, service.address) for _ in range(CONNECTIONS)}
    finally:
        caller.close()
    assert answers == workers  # each worker answered some; the parent served none
    accepted = per_pid(scrape(service), "teaclave_ma_worker_handshakes_accepted")
    assert {pid for pid, count in accepted.items() if count > 0} == workers
    assert sum(accepted.values()) == CONNECTIONS


def test_metrics_count_handshakes_refusals_cache_and_rpcs(
    deployment: SimulatedDeployment, service: ServiceProcess
) -> None:
    caller, stranger = node(deployment, "caller", service), node(deployment, "other", service)
    try:
        for _ in range(3):
            fresh_call(caller, service.address)
        with pytest.raises(RpcError, match="no method 'made_up'"):
            fresh_call(caller, service.address, "made_up")
        with pytest.raises(RefusedByPeer):  # not in echo's inbound list
            fresh_call(stranger, service.address)
    finally:
        caller.close()
        stranger.close()
    samples = scrape(service)
    assert samples["teaclave_ma_handshakes_accepted_total"] == [({}, 4.0)]
    (refused,) = samples["teaclave_ma_handshakes_refused_total"]
    assert refused[1] == 1.0 and refused[0]["check"] == "manifest_identity"
    cache = {
        labels["result"]: value
        for labels, value in samples["teaclave_ma_peer_certificate_cache_total"]
    }
    assert cache["miss"] >= 1 and cache["miss"] + cache.get("hit", 0) == 5
    counts = {labels["method"]: value for labels, value in samples["teaclave_ma_rpc_seconds_count"]}
    assert counts == {"whoami": 3.0}  # a peer's made-up method names no series
    manifest = deployment.manifest_path.read_text()
    expires = re.search(r"expires: '?([^'\s]+)", manifest)
    assert expires is not None
    expiry = samples["teaclave_ma_manifest_expiry_timestamp_seconds"][0][1]
    assert expiry == dt.datetime.fromisoformat(expires[1].replace("Z", "+00:00")).timestamp()
    collateral = per_pid(samples, "teaclave_ma_collateral_expiry_timestamp_seconds")
    verified = [expiry for expiry in collateral.values() if expiry]  # workers that verified one
    assert verified and min(verified) > dt.datetime.now(dt.UTC).timestamp()


def test_health_says_up_and_ready_with_the_manifest_version_only(service: ServiceProcess) -> None:
    base = health_base(service)
    live = httpx.get(base + "/livez", timeout=WAIT)
    assert (live.status_code, live.json()) == (200, {"status": "up"})
    ready = httpx.get(base + "/readyz", timeout=WAIT)
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "manifest_version": 1})
    assert httpx.get(base + "/secrets", timeout=WAIT).status_code == 404


def test_a_sighup_reload_reaches_every_worker(
    deployment: SimulatedDeployment, service: ServiceProcess
) -> None:
    workers = workers_of(service)
    version = "teaclave_ma_manifest_version"
    assert set(per_pid(scrape(service), version).values()) == {1.0}
    publish(deployment, version=2)
    service.process.send_signal(signal.SIGHUP)
    assert wait_until(
        lambda: (
            per_pid(scrape(service), version)
            == {pid: 2.0 for pid in {*workers, service.process.pid}}
        ),
        WAIT,
    ), per_pid(scrape(service), version)
    ready = httpx.get(health_base(service) + "/readyz", timeout=WAIT).json()
    assert ready == {"ready": True, "manifest_version": 2}


def test_sigterm_stops_the_parent_and_every_worker(service: ServiceProcess) -> None:
    workers = workers_of(service)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(WAIT) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its parent"


def test_a_dead_worker_stops_the_service_with_exit_1(service: ServiceProcess) -> None:
    victim, survivor = sorted(workers_of(service))
    os.kill(victim, signal.SIGKILL)
    assert service.process.wait(WAIT) == 1
    assert not Path(f"/proc/{survivor}").exists()
    log = service.log_path.read_text()
    assert f"echo-worker-0 (pid {victim}) exited with -9; stopping the service" in log or (
        f"echo-worker-1 (pid {victim}) exited with -9; stopping the service" in log
    )
