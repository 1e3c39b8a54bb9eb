"""Fault: a manifest, or its signature directory, caught half-written by a running service.

Whoever publishes a new manifest may write it in place (truncate, then write) and the
signature files one after the other; a reload can land in between. The manifest in force
must stay in force, the refusal must be logged naming the files, and the next complete
write must be picked up. Both reload paths are played: ``reload_manifest`` (what SIGHUP
runs, also sent to a real ``teaclave-ma serve`` process) and the file watch.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from teaclave_ma.demo.processes import serve_command, start_service
from teaclave_ma.formats.signature import signature_path
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from tests.helpers import copy_manifest, wait_until
from tests.integration.conftest import RuntimeFactory, deployment, runtimes  # noqa: F401

SERVICES = ["frontend", "storage"]
SIGNERS = ["alice", "bob"]


class Publisher:
    """Writes a deployment's manifests into one directory, whole or in pieces, in place."""

    def __init__(self, deployment: SimulatedDeployment, directory: Path) -> None:  # noqa: F811
        self.deployment = deployment
        self.manifest = directory / "manifest.yaml"
        self.signatures = directory / "signatures"
        self.signatures.mkdir(parents=True, exist_ok=True)

    def signed(self, version: int) -> tuple[bytes, list[tuple[Path, bytes]]]:
        panel = self.deployment.panel
        entries = {name: [accepted(self.deployment.images[name].identity)] for name in SERVICES}
        data = panel.manifest(entries, version=version)
        signatures = [
            (signature_path(self.signatures, auditor.key_id), auditor.sign(data).to_bytes())
            for auditor in panel.signers(SIGNERS)
        ]
        return data, signatures

    def publish(self, version: int) -> bytes:
        data, signatures = self.signed(version)
        self.manifest.write_bytes(data)
        for path, content in signatures:
            path.write_bytes(content)
        return data


@pytest.fixture
def publisher(deployment: SimulatedDeployment, tmp_path: Path) -> Publisher:  # noqa: F811
    publisher = Publisher(deployment, tmp_path)
    publisher.publish(1)
    return publisher


def serving(runtimes: RuntimeFactory, publisher: Publisher) -> ServiceRuntime:  # noqa: F811
    """Storage on the publisher's files; not started, so no file watch until ``start()``."""
    return runtimes("storage", manifest=publisher.manifest, signatures=publisher.signatures)


# Where a write in place can be caught: just truncated, half written, one byte short.
CUTS = {
    "empty": lambda data: b"",
    "half": lambda data: data[: len(data) // 2],
    "short": lambda data: data[:-1],
}


@pytest.mark.parametrize("cut", CUTS)
def test_a_truncated_manifest_keeps_the_old_one_in_force_on_reload(
    runtimes: RuntimeFactory,  # noqa: F811
    publisher: Publisher,
    caplog: pytest.LogCaptureFixture,
    cut: str,
) -> None:
    storage = serving(runtimes, publisher)  # reloads only when told, as on SIGHUP
    data, signatures = publisher.signed(2)
    for path, content in signatures:
        path.write_bytes(content)
    publisher.manifest.write_bytes(CUTS[cut](data))

    assert storage.reload_manifest() is False
    assert storage.keeper.current().version == 1
    (record,) = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert record.levelname == "ERROR"
    message = record.getMessage()
    assert (
        f"manifest reload from {publisher.manifest} with signatures in {publisher.signatures}"
        in (message)
    )
    assert "keeping v1 in force: 0 of the required 2 trusted auditor signatures" in message
    assert "signature by auditor 'alice' does not verify over these manifest bytes" in message

    publisher.manifest.write_bytes(data)
    assert storage.reload_manifest() is True
    assert storage.keeper.current().version == 2


@pytest.mark.parametrize("half_written", ["one file missing", "one file truncated"])
def test_a_half_written_signature_directory_keeps_the_old_manifest_in_force_on_reload(
    runtimes: RuntimeFactory,  # noqa: F811
    publisher: Publisher,
    caplog: pytest.LogCaptureFixture,
    half_written: str,
) -> None:
    storage = serving(runtimes, publisher)
    data, [(alice, alice_signature), (bob, bob_signature)] = publisher.signed(2)
    publisher.manifest.write_bytes(data)
    alice.write_bytes(alice_signature)
    if half_written == "one file missing":
        bob.unlink()  # the new manifest's second signature is not written yet
    else:
        bob.write_bytes(bob_signature[:-40])  # caught in the middle of the signature value

    assert storage.reload_manifest() is False
    assert storage.keeper.current().version == 1
    assert "keeping v1 in force: 1 of the required 2 trusted auditor signatures (valid: alice)" in (
        caplog.text
    )
    if half_written == "one file truncated":
        assert (
            f"unreadable signature ignored: {bob.name}.signature: expected 128 hex" in caplog.text
        )

    bob.write_bytes(bob_signature)
    assert storage.reload_manifest() is True
    assert storage.keeper.current().version == 2


def test_the_file_watch_skips_a_truncated_manifest_and_picks_up_the_good_one(
    runtimes: RuntimeFactory,  # noqa: F811
    publisher: Publisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = serving(runtimes, publisher)
    address = storage.start()
    manifest, signatures = copy_manifest(
        publisher.manifest, publisher.signatures, publisher.manifest.parent / "frontend"
    )  # the same v1 in files of its own, which stay whole
    frontend = runtimes(
        "frontend",
        manifest=manifest,
        signatures=signatures,
        storage=address,
        authentication=address,
    )
    client = frontend.context.client("storage")
    assert client.call("keys") == []

    data, signatures = publisher.signed(2)
    for path, content in signatures:
        path.write_bytes(content)
    publisher.manifest.write_bytes(CUTS["half"](data))
    assert wait_until(lambda: f"{publisher.manifest} with signatures" in caplog.text)
    assert "keeping v1 in force" in caplog.text
    assert storage.keeper.current().version == 1
    assert client.call("keys") == []  # still serving, under v1

    publisher.manifest.write_bytes(data)
    assert wait_until(lambda: storage.keeper.current().version == 2)
    assert client.call("keys") == []


def test_a_serve_process_keeps_its_manifest_through_a_truncated_write_and_sighup(
    deployment: SimulatedDeployment,  # noqa: F811
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    config = deployment.runtime_config("storage-truncated")
    process = start_service(
        "storage",
        serve_command(
            deployment.images["storage"].root,
            publisher.manifest,
            publisher.signatures,
            config,
            initialize_state=True,
        ),
        tmp_path / "storage.log",
    )
    try:
        data, signatures = publisher.signed(2)
        for path, content in signatures:
            path.write_bytes(content)
        publisher.manifest.write_bytes(CUTS["half"](data))
        process.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "keeping v1 in force" in process.log_path.read_text())
        assert str(publisher.manifest) in process.log_path.read_text()

        publisher.manifest.write_bytes(data)
        process.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "manifest v2 accepted" in process.log_path.read_text())
    finally:
        process.stop()
    assert process.process.returncode == 0
