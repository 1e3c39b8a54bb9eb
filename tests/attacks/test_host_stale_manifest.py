"""Attacks with stale manifests, played as the host: it owns every service's manifest files
and state directory, and decides when each process (re)starts.

The story: the auditors have published v2 and storage and the client app run it. The host
restarts frontend on the old v1 (its old files, a fresh or an old sealed state: both hold
no v2), hoping that frontend keeps trusting whom v1 trusted. Each peer's certificate claims
the manifest its service enforces, bound by its quote: frontend's peers refuse it, naming
both versions, and frontend itself, once it has met a peer on v2, refuses every connection
until it is given v2.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

import teaclave_ma.rpc.server as server_module
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer, TransportError
from teaclave_ma.trust.manifest_trust import ManifestSuperseded, PeerManifestOlder
from tests.attacks.test_handshake_attacks import requests_read  # noqa: F401
from tests.helpers import copy_manifest, record_raised, wait_until
from tests.integration.conftest import (  # noqa: F401
    ALL_SERVICES,
    RuntimeFactory,
    deployment,
    runtimes,
)

SUPERSEDED = "manifest v2 is in force at storage; this service has v1: reload"


@attrs.frozen
class Files:
    manifest: Path
    signatures: Path


@attrs.define
class Host:
    deployment: SimulatedDeployment
    root: Path
    v2: Files

    def old_files(self, service: str) -> Files:
        """A copy of v1 (the deployment's manifest) for ``service`` to be restarted on."""
        manifest, signatures = copy_manifest(
            self.deployment.manifest_path, self.deployment.signatures_dir, self.root / service
        )
        return Files(manifest, signatures)

    def hand_over_v2(self, files: Files) -> None:
        """What an honest host does at last: v2 in place of the old files."""
        shutil.rmtree(files.signatures)
        shutil.copytree(self.v2.signatures, files.signatures)
        shutil.copy2(self.v2.manifest, files.manifest)


@pytest.fixture
def host(deployment: SimulatedDeployment, tmp_path: Path) -> Host:  # noqa: F811
    entries = {name: [accepted(deployment.images[name].identity)] for name in ALL_SERVICES}
    data = deployment.panel.manifest(entries, version=2)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "manifest.yaml").write_bytes(data)
    signatures = deployment.panel.write_signatures(
        tmp_path / "v2" / "signatures", data, by=["alice", "carol"]
    )
    return Host(deployment, tmp_path, Files(tmp_path / "v2" / "manifest.yaml", signatures))


def on(runtimes: RuntimeFactory, service: str, files: Files, **peers: Any) -> ServiceRuntime:  # noqa: F811
    return runtimes(service, manifest=files.manifest, signatures=files.signatures, **peers)


def test_a_service_restarted_on_an_old_manifest_is_refused_by_its_newer_peer(
    host: Host,
    runtimes: RuntimeFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    requests_read: list[Any],  # noqa: F811
) -> None:
    """Frontend's certificate claims v1: storage, on v2, refuses it in the handshake. (The
    client side checks storage without regard to its own staleness, as a peer that does
    not stop itself would: the refusal is storage's own.)"""
    refusals = record_raised(monkeypatch, server_module, "handshake")
    storage = on(runtimes, "storage", host.v2)
    address = storage.start()
    frontend = on(
        runtimes, "frontend", host.old_files("frontend"), storage=address, authentication=address
    )
    verifier = PeerVerifier(
        storage.keeper, storage.attestation.anchor, storage.attestation.collateral_for
    )
    with (
        PeerClient("storage", address, frontend.credentials, verifier, timeout=5) as client,
        pytest.raises((RefusedByPeer, TransportError)),
    ):
        client.call("keys")
    assert wait_until(lambda: refusals)
    (refusal,) = refusals
    assert isinstance(refusal, PeerRejected)
    assert isinstance(refusal.reason, PeerManifestOlder)
    assert str(refusal.reason) == (
        "frontend runs manifest v1, older than v2 in force here: frontend must reload v2 or newer"
    )
    assert requests_read == []


def test_a_service_restarted_on_an_old_manifest_stops_at_its_first_newer_peer(
    host: Host,
    runtimes: RuntimeFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    requests_read: list[Any],  # noqa: F811
) -> None:
    refusals = record_raised(monkeypatch, server_module, "handshake")
    storage_address = on(runtimes, "storage", host.v2).start()
    old = host.old_files("frontend")
    frontend = on(
        runtimes, "frontend", old, storage=storage_address, authentication=storage_address
    )
    frontend_address = frontend.start()

    # Frontend calls storage and meets v2 in storage's certificate.
    with pytest.raises(PeerRejected) as caught:
        frontend.context.client("storage").call("keys")
    assert isinstance(caught.value.reason, ManifestSuperseded)
    assert str(caught.value.reason) == SUPERSEDED
    with pytest.raises(ManifestSuperseded, match=SUPERSEDED):
        frontend.keeper.current()

    # From now on it accepts no one, not even a client the host also left on v1.
    stale_client = on(runtimes, "client", host.old_files("client"), frontend=frontend_address)
    with pytest.raises((RefusedByPeer, TransportError)):
        stale_client.context.client("frontend").call("login", user="u", password="p")
    # Storage's server refused frontend's v1 certificate above, while frontend was refusing
    # storage's (both ends check at once): only frontend's own refusals count here.
    def superseded() -> list[PeerRejected]:
        return [
            r
            for r in refusals
            if isinstance(r, PeerRejected) and isinstance(r.reason, ManifestSuperseded)
        ]

    assert wait_until(superseded)
    (refusal,) = superseded()
    assert str(refusal.reason) == SUPERSEDED
    # A client on v2 refuses frontend itself, naming both versions.
    client = on(runtimes, "client", host.v2, frontend=frontend_address)
    with pytest.raises(PeerRejected) as old_server:
        client.context.client("frontend").call("login", user="u", password="p")
    assert isinstance(old_server.value.reason, PeerManifestOlder)
    assert "frontend runs manifest v1, older than v2 in force here" in str(old_server.value)
    assert requests_read == []

    host.hand_over_v2(old)
    assert frontend.reload_manifest() is True
    assert frontend.keeper.current().version == 2
    assert frontend.context.client("storage").call("keys") == []  # a fresh, v2 certificate
