"""Secret provisioning with real processes: the kms runs as `teaclave-ma serve`, sealed
jobs start through `teaclave-ma run`."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teaclave_ma.demo.processes import ServiceProcess, serve_command, start_service
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.secrets.client import fetch_secret
from teaclave_ma.secrets.policy import SecretRefused
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer

RuntimeFactory = Callable[..., ServiceRuntime]


@pytest.fixture(scope="module")
def kms(
    deployment: SimulatedDeployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    config = deployment.runtime_config("kms-process")
    command = serve_command(
        deployment.images["kms"].root,
        deployment.manifest_path,
        deployment.signatures_dir,
        config,
        initialize_state=True,
    )
    process = start_service("kms", command, tmp_path_factory.mktemp("logs") / "kms.log")
    deployment.provision_kms(process.address)
    yield process
    process.stop()


def run_report(
    deployment: SimulatedDeployment, name: str, kms: tuple[str, int]
) -> subprocess.CompletedProcess[str]:
    """``teaclave-ma run`` of the report image: it runs what its service.yaml says."""
    config = deployment.runtime_config(name, peers={"kms": kms}, provision=True)
    return subprocess.run(
        [
            sys.executable, "-m", "teaclave_ma.cli.main", "run", str(deployment.images["report"].root),
            "--manifest", str(deployment.manifest_path), "--signatures", str(deployment.signatures_dir),
            "--config", str(config), "--initialize-state",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def left_in(directory: Path) -> list[Path]:
    """Everything under ``directory`` (a provision_dir) once ``run`` has exited."""
    return sorted(directory.rglob("*")) if directory.exists() else []


def test_sealed_job_runs_after_provisioning(
    deployment: SimulatedDeployment, kms: ServiceProcess
) -> None:
    result = run_report(deployment, "report-ok", kms.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("report ran for ACME Bank with an API token of 32 bytes")
    # the job's private directory went with the job: the plaintext is nowhere in the deployment
    assert left_in(deployment.root / "run" / "report-ok" / "provisioned") == []
    plaintext = b"discount_rate: 0.125"
    assert [
        p for p in deployment.root.rglob("*") if p.is_file() and plaintext in p.read_bytes()
    ] == []


def test_sealed_job_never_starts_when_the_kms_is_unreachable(
    deployment: SimulatedDeployment,
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    address = closed.getsockname()[:2]
    closed.close()
    result = run_report(deployment, "report-no-kms", address)
    assert result.returncode == 2, result.stderr
    assert "report ran" not in result.stdout
    assert "error" in result.stderr
    assert left_in(deployment.root / "run" / "report-no-kms" / "provisioned") == []


def test_a_kms_of_unknown_identity_gets_nothing(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    def one_line(source: Path) -> None:
        path = source / "kms_service.py"
        path.write_text(path.read_text() + "\n# a kms nobody audited\n")

    impostor = deployment.build(
        "kms", source=deployment.variant_source("kms", "-impostor", one_line), tag="-impostor"
    )
    address = runtimes(impostor).start()
    # The owner does not put a byte into it: the impostor is no manifest kms.
    with pytest.raises(PeerRejected, match="is not accepted for service 'kms'"):
        deployment.provision_kms(address)
    result = run_report(deployment, "report-impostor", address)
    assert result.returncode == 1
    assert "not accepted for service 'kms'" in result.stderr
    assert "report ran" not in result.stdout
    assert left_in(deployment.root / "run" / "report-impostor" / "provisioned") == []


def test_another_service_is_refused_by_the_policy(
    deployment: SimulatedDeployment, kms: ServiceProcess, runtimes: RuntimeFactory
) -> None:
    frontend = runtimes("frontend", storage=kms.address, authentication=kms.address)
    client = PeerClient("kms", kms.address, frontend.credentials, frontend.verifier)
    with pytest.raises(SecretRefused) as caught:
        fetch_secret(client, "token-key")
    assert caught.value.check == "secrets.token-key.allow"
    assert "not released to service 'frontend'" in str(caught.value)
    client.close()


def test_a_changed_authentication_is_refused_before_it_can_ask(
    deployment: SimulatedDeployment, kms: ServiceProcess, runtimes: RuntimeFactory
) -> None:
    def one_line(source: Path) -> None:
        path = source / "authentication_service.py"
        path.write_text(path.read_text().replace("TOKEN_LIFETIME = 3600", "TOKEN_LIFETIME = 36000"))

    image = deployment.build(
        "authentication",
        source=deployment.variant_source("authentication", "-longer-tokens", one_line),
        tag="-changed",
    )
    with pytest.raises(RefusedByPeer):
        runtimes(
            image, storage=kms.address, kms=kms.address
        )  # its build() asks the kms for token-key


def test_a_debug_authentication_is_refused_by_the_kms_policy(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, tmp_path: Path
) -> None:
    """Even where auditors accept a debug build, the kms's verify_enclave_debuggable check refuses it."""

    def make_debug(source: Path) -> None:
        path = source / "service.yaml"
        path.write_text(path.read_text().replace("isv_svn: 1\n", "isv_svn: 1\n  debug: true\n"))

    debug = deployment.build(
        "authentication",
        source=deployment.variant_source("authentication", "-debug", make_debug),
        tag="-debug",
    )
    entries = {
        name: [accepted(deployment.images[name].identity)]
        for name in ("kms", "storage", "authentication")
    }
    entries["authentication"].append(accepted(debug.identity))
    data = deployment.panel.manifest(entries, version=1, secrets=deployment.secret_rules)
    manifest, signatures = tmp_path / "manifest.yaml", tmp_path / "signatures"
    manifest.write_bytes(data)
    deployment.panel.write_signatures(signatures, data, by=["alice", "bob"])
    kms_address = runtimes("kms", manifest=manifest, signatures=signatures).start()
    with pytest.raises(SecretRefused) as caught:
        runtimes(
            debug, manifest=manifest, signatures=signatures, storage=kms_address, kms=kms_address
        )
    assert caught.value.check == "secrets.token-key.verify"
    assert "verify_enclave_debuggable: debug enclave" in str(caught.value)


def test_authentication_tokens_survive_a_restart_because_the_key_comes_from_the_kms(
    kms: ServiceProcess, runtimes: RuntimeFactory
) -> None:
    storage = runtimes("storage").start()
    first = runtimes("authentication", storage=storage, kms=kms.address)
    second = runtimes("authentication", storage=storage, kms=kms.address)
    first_addr, second_addr = first.start(), second.start()
    frontend = runtimes("frontend", storage=storage, authentication=first_addr)
    auth_one = frontend.context.client("authentication")
    auth_one.call("register", user="lovelace", password="analytical")
    token = auth_one.call("login", user="lovelace", password="analytical")
    other = PeerClient("authentication", second_addr, frontend.credentials, frontend.verifier)
    assert other.call("verify", token=token) == "lovelace"
    other.close()
    with pytest.raises(PeerRejected):
        PeerClient("kms", storage, frontend.credentials, frontend.verifier).call(
            "get_secret", name="token-key"
        )
