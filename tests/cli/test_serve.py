"""``teaclave-ma serve`` on a broken service, a busy port, a manifest without its entry."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from teaclave_ma.cli.main import main
from teaclave_ma.demo.processes import serve_command, start_service
from teaclave_ma.testing.deployment import SimulatedDeployment
from tests.helpers import wait_until

SERVICES = Path(__file__).resolve().parents[2] / "services"
BROKEN = """from teaclave_ma.rpc.service import Service


def build(context: object) -> Service:
    return Service(undefined_name)  # type: ignore[name-defined]  # noqa: F821
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    """storage and a service whose build() fails; the manifest accepts both, and an
    ``orphan`` copy of storage it does not know."""
    sources = tmp_path_factory.mktemp("services")
    shutil.copytree(
        SERVICES / "storage", sources / "storage", ignore=shutil.ignore_patterns("__pycache__")
    )
    broken = sources / "broken"
    broken.mkdir()
    (broken / "service.yaml").write_text(
        "name: broken\nentrypoint: broken_service:build\nenclave: {isv_prod_id: 9, isv_svn: 1}\n"
    )
    (broken / "broken_service.py").write_text(BROKEN)
    orphan = sources / "orphan"
    shutil.copytree(sources / "storage", orphan)
    (orphan / "service.yaml").write_text(
        (orphan / "service.yaml").read_text().replace("name: storage", "name: orphan")
    )
    deployment = SimulatedDeployment.create(tmp_path_factory.mktemp("deployment"), sources)
    for name in ("storage", "broken", "orphan"):
        deployment.build(name)
    entries = {name: deployment.review(name) for name in ("storage", "broken")}
    deployment.publish_manifest(entries, version=1, signers=["alice", "bob"])
    return deployment


def serve(deployment: SimulatedDeployment, name: str, config: Path) -> list[str]:
    return [
        "serve", str(deployment.images[name].root), "--manifest", str(deployment.manifest_path),
        "--signatures", str(deployment.signatures_dir), "--config", str(config), "--initialize-state",
    ]  # fmt: skip


def test_a_service_whose_code_fails_is_reported_in_one_line(
    deployment: SimulatedDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(serve(deployment, "broken", deployment.runtime_config("broken"))) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: broken: its code failed while starting at broken_service.py, line 5: "
        "NameError: name 'undefined_name' is not defined\n"
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_a_busy_port_is_named(
    deployment: SimulatedDeployment, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = deployment.runtime_config("storage-busy", listen_port=busy_port)
    assert main(serve(deployment, "storage", config)) == 2
    assert capsys.readouterr().err == (
        f"error: listen: cannot listen on 127.0.0.1:{busy_port}: Address already in use\n"
    )


def test_serving_without_a_manifest_entry_warns(
    deployment: SimulatedDeployment, tmp_path: Path
) -> None:
    log_path = tmp_path / "orphan.log"
    command = serve_command(
        deployment.images["orphan"].root,
        deployment.manifest_path,
        deployment.signatures_dir,
        deployment.runtime_config("orphan"),
        initialize_state=True,
    )
    process = start_service("orphan", command, log_path)
    try:
        assert wait_until(lambda: "orphan serving on" in log_path.read_text())
        assert (
            "WARNING teaclave_ma.cli.serve_cmd: manifest v1 has no entry for orphan: every peer "
            "will refuse it until a manifest that accepts it is in force"
        ) in log_path.read_text()
    finally:
        process.stop()
