"""A running service: manifest replacement, certificate rotation, and its bounds."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.demo.processes import serve_command, start_service
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.server import RpcServer
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.credentials import RotatingCredentials
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer, TransportError
from tests.helpers import copy_manifest, wait_until

RuntimeFactory = Callable[..., ServiceRuntime]


def publish(
    deployment: SimulatedDeployment,
    directory: Path,
    services: list[str],
    version: int,
    signers: list[str],
) -> tuple[Path, Path]:
    """A manifest of its own for one test, so the shared deployment stays untouched."""
    manifest = directory / "manifest.yaml"
    entries = {name: [accepted(deployment.images[name].identity)] for name in services}
    data = deployment.panel.manifest(entries, version=version)
    manifest.write_bytes(data)
    signatures = directory / "signatures"
    for old in signatures.glob("*.sig") if signatures.exists() else []:
        old.unlink()
    deployment.panel.write_signatures(signatures, data, by=signers)
    return manifest, signatures


ALL = ["client", "frontend", "authentication", "storage"]


def test_a_replaced_manifest_takes_effect_and_a_bad_one_is_ignored(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, tmp_path: Path
) -> None:
    manifest, signatures = publish(deployment, tmp_path, ALL, 1, ["alice", "bob"])
    storage = runtimes("storage", manifest=manifest, signatures=signatures)
    address = storage.start()
    # Frontend holds the same v1, in files of its own that it reloads only when told.
    own_manifest, own_signatures = copy_manifest(manifest, signatures, tmp_path / "frontend")
    frontend = runtimes(
        "frontend",
        manifest=own_manifest,
        signatures=own_signatures,
        storage=address,
        authentication=address,
    )
    open_connection = frontend.context.client("storage")
    assert open_connection.call("keys") == []

    publish(deployment, tmp_path, ["client", "authentication", "storage"], 2, ["bob", "carol"])
    assert storage.reload_manifest() is True
    assert storage.keeper.current().version == 2
    with pytest.raises(TransportError, match=r"HTTP 403.*no longer accepted"):
        open_connection.call("keys")  # an open connection is re-checked before every request
    shutil.rmtree(tmp_path / "frontend")
    copy_manifest(manifest, signatures, tmp_path / "frontend")
    assert frontend.reload_manifest() is True  # on v2 too, so that storage is the one to refuse
    fresh = PeerClient("storage", address, frontend.credentials, frontend.verifier)
    with pytest.raises(RefusedByPeer):
        fresh.call("keys")  # frontend is no longer accepted by storage's manifest

    publish(deployment, tmp_path, ALL, 3, ["alice"])  # one signature only
    assert storage.reload_manifest() is False
    assert storage.keeper.current().version == 2


def test_the_manifest_watcher_notices_a_changed_file(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, tmp_path: Path
) -> None:
    manifest, signatures = publish(deployment, tmp_path, ALL, 1, ["alice", "bob"])
    storage = runtimes("storage", manifest=manifest, signatures=signatures)
    storage.start()
    publish(deployment, tmp_path, ALL, 5, ["alice", "carol"])
    assert wait_until(lambda: storage.keeper.current().version == 5)


def test_the_manifest_watcher_survives_a_failing_reload(
    deployment: SimulatedDeployment,
    runtimes: RuntimeFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest, signatures = publish(deployment, tmp_path, ALL, 1, ["alice", "bob"])
    storage = runtimes("storage", manifest=manifest, signatures=signatures)
    reload, failures = storage.keeper.reload, []

    def fails_once() -> bool:
        if not failures:
            failures.append(1)
            raise RuntimeError("an unexpected bug")
        return reload()

    monkeypatch.setattr(storage.keeper, "reload", fails_once)
    storage.start()
    publish(deployment, tmp_path, ALL, 4, ["alice", "carol"])
    assert wait_until(lambda: failures == [1])
    assert storage.keeper.current().version == 1  # the one in force stays
    publish(deployment, tmp_path, ALL, 5, ["alice", "carol"])
    assert wait_until(lambda: storage.keeper.current().version == 5)


def test_certificates_rotate_without_dropping_open_connections(runtimes: RuntimeFactory) -> None:
    storage = runtimes("storage")
    # A clock the test moves, so rotation happens exactly when the test says, however slow
    # the machine. Shifts stay well inside the one-minute back-dating of certificates.
    start, shift = dt.datetime.now(dt.UTC), [dt.timedelta(0)]
    credentials = RotatingCredentials(
        storage.attestation.attester,
        "storage",
        manifest=storage.keeper.in_force,
        lifetime=dt.timedelta(minutes=2),
        refresh_before=dt.timedelta(seconds=90),
        clock=lambda: start + shift[0],
    )
    server = RpcServer(
        storage.service,
        credentials,
        storage.verifier,
        inbound=["frontend"],
        address=("127.0.0.1", 0),
    )
    address = server.start()
    try:
        frontend = runtimes("frontend", storage=address, authentication=address)
        first = PeerClient("storage", address, frontend.credentials, frontend.verifier)
        first_peer = first.connect()
        assert first.call("put", key="k", value="v") is True
        shift[0] = dt.timedelta(seconds=45)  # within refresh_before of expiry: rotate on next use
        second = PeerClient("storage", address, frontend.credentials, frontend.verifier)
        second_peer = second.connect()
        assert second_peer.certificate_sha256 != first_peer.certificate_sha256
        assert credentials.generation == 2
        assert first.call("get", key="k") == "v"  # the old connection keeps working
        assert (
            first.peer is not None
            and first.peer.certificate_sha256 == first_peer.certificate_sha256
        )
    finally:
        server.stop()


def test_a_silent_connection_is_dropped_after_the_handshake_deadline(
    runtimes: RuntimeFactory,
) -> None:
    storage = runtimes("storage", limits=ServerLimits(handshake_timeout=0.5))
    address = storage.start()
    silent = socket.create_connection(address)
    silent.settimeout(5)
    frontend = runtimes("frontend", storage=address, authentication=address)
    assert frontend.context.client("storage").call("keys") == []  # others are served meanwhile
    started = time.monotonic()
    assert silent.recv(1) == b""  # closed by the server
    assert time.monotonic() - started < 3
    silent.close()


def test_connection_limit_and_request_size_limit(runtimes: RuntimeFactory) -> None:
    storage = runtimes(
        "storage",
        limits=ServerLimits(max_connections=1, handshake_timeout=3.0, max_request_bytes=2048),
    )
    address = storage.start()
    frontend = runtimes("frontend", storage=address, authentication=address)
    hog = socket.create_connection(address)  # holds the only slot until its handshake deadline
    time.sleep(0.2)
    with pytest.raises((TransportError, RefusedByPeer, PeerRejected)):
        PeerClient("storage", address, frontend.credentials, frontend.verifier, timeout=2).call(
            "keys"
        )
    hog.close()
    client = PeerClient("storage", address, frontend.credentials, frontend.verifier, timeout=5)
    assert wait_until(lambda: _succeeds(client))
    with pytest.raises(TransportError):
        client.call("put", key="big", value="x" * 5000)


def _succeeds(client: PeerClient) -> bool:
    try:
        client.call("keys")
    except (TransportError, RefusedByPeer):
        return False
    return True


def test_serve_process_reloads_on_sighup(deployment: SimulatedDeployment, tmp_path: Path) -> None:
    manifest, signatures = publish(deployment, tmp_path, ALL, 1, ["alice", "bob"])
    config = deployment.runtime_config("storage-sighup")
    process = start_service(
        "storage",
        serve_command(
            deployment.images["storage"].root, manifest, signatures, config, initialize_state=True
        ),
        tmp_path / "storage.log",
    )
    try:
        publish(deployment, tmp_path, ALL, 2, ["alice", "bob"])
        process.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "manifest v2 accepted" in process.log_path.read_text())
        publish(deployment, tmp_path, ALL, 3, ["carol"])
        process.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "keeping v2 in force" in process.log_path.read_text())
    finally:
        process.stop()
    assert process.process.returncode == 0
