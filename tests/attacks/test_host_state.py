"""Attacks on what a service keeps, played as the host: it owns the state directory, the
runtime.yaml that names it, and the clock.

The story: manifest v1 accepts storage and a frontend build; v2 revokes that frontend.
Storage has accepted v2. The host wants storage back on v1, so that the revoked frontend is
served again: it deletes, forges, replays or redirects the state, or sets the clock back.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.formats.manifest import Manifest
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import SEALED_STATE, EnclaveNode
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.trust.keeper import ManifestKeeper
from teaclave_ma.trust.manifest_trust import ManifestRejected, ManifestTrust
from teaclave_ma.trust.sealed_state import (
    ClockBehindFloor,
    StateExists,
    StateMissing,
    StateNotOurs,
    StateTampered,
)
from tests.integration.conftest import SERVICES_DIR, deployment  # noqa: F401
from tests.trust.sealing_helpers import sealed_keeper

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@attrs.define
class Host:
    """The host's view of one storage deployment: the manifests it can hand over, the
    runtime.yaml it writes, and the state directory that names."""

    deployment: SimulatedDeployment
    root: Path
    config: Path

    def manifest_dir(self, version: int) -> Path:
        return self.root / f"v{version}"

    def publish(self, version: int, services: tuple[str, ...]) -> None:
        images = self.deployment.images
        entries = {name: (accepted(images[name].identity),) for name in services}
        data = Manifest(
            version=version,
            expires=NOW + dt.timedelta(days=30),
            enclaves=entries,
            issued=NOW - dt.timedelta(days=1),
        ).to_bytes()
        directory = self.manifest_dir(version)
        directory.mkdir(parents=True)
        (directory / "manifest.yaml").write_bytes(data)
        self.deployment.panel.write_signatures(directory / "signatures", data, by=["alice", "bob"])

    @property
    def state(self) -> Path:
        return self.config.parent / "state" / SEALED_STATE

    def start(
        self, version: int, *, config: Path | None = None, initialize: bool = False
    ) -> EnclaveNode:
        config = config or self.config
        directory = self.manifest_dir(version)
        node = EnclaveNode(
            self.deployment.images["storage"],
            parse_runtime_config(config.read_bytes(), config.parent),
            directory / "manifest.yaml",
            directory / "signatures",
            initialize_state=initialize,
        )
        node.close()
        return node

    def refused(self, version: int, **options: object) -> TeaclaveMAError:
        with pytest.raises(TeaclaveMAError) as caught:
            self.start(version, **options)  # type: ignore[arg-type]
        return caught.value


@pytest.fixture
def host(deployment: SimulatedDeployment, tmp_path: Path) -> Iterator[Host]:  # noqa: F811
    host = Host(deployment, tmp_path, deployment.runtime_config(f"storage-{tmp_path.name}"))
    host.publish(1, ("storage", "frontend"))
    host.publish(2, ("storage",))  # the frontend build is revoked
    assert host.start(1, initialize=True).manifest.version == 1
    shutil.copy(host.state, tmp_path / "state-when-v1")  # what a host can keep a copy of
    assert host.start(2).manifest.version == 2
    yield host


def test_with_its_state_intact_storage_refuses_the_rollback(host: Host) -> None:
    refusal = host.refused(1)
    assert isinstance(refusal, ManifestRejected) and refusal.checks == {"rollback"}
    assert "manifest v1 is older than v2" in str(refusal)


def test_delete_the_state(host: Host) -> None:
    host.state.unlink()
    refusal = host.refused(1)
    assert isinstance(refusal, StateMissing)
    assert "pass --initialize-state on storage's first start only" in str(refusal)


def test_redirect_to_a_fresh_state_dir(host: Host, tmp_path: Path) -> None:
    document = host.config.read_text().replace("state_dir: state", "state_dir: elsewhere")
    redirected = host.config.with_name("redirected.yaml")
    redirected.write_text(document)
    refusal = host.refused(1, config=redirected)
    assert isinstance(refusal, StateMissing)
    assert f"no state at {host.config.parent / 'elsewhere' / SEALED_STATE}" in str(refusal)


def test_reset_over_an_existing_state(host: Host) -> None:
    refusal = host.refused(1, initialize=True)
    assert isinstance(refusal, StateExists) and "never replaces a state" in str(refusal)


@pytest.mark.parametrize(
    ("forgery", "fragment"),
    [
        (b'{"version": 0, "sha256": ""}\n', "not a service state"),  # the old plain format
        (b"", "not a service state"),
        (b"\x00" * 70_000, "larger than the limit"),
    ],
)
def test_forge_the_state(host: Host, forgery: bytes, fragment: str) -> None:
    host.state.write_bytes(forgery)
    refusal = host.refused(1)
    assert isinstance(refusal, StateTampered) and fragment in str(refusal)


def test_forge_by_flipping_a_bit_of_the_sealed_state(host: Host) -> None:
    sealed = bytearray(host.state.read_bytes())
    at = sealed.index(b'"sealed": "') + 20
    sealed[at] = ord("0") if sealed[at] != ord("0") else ord("1")
    host.state.write_bytes(bytes(sealed))
    refusal = host.refused(1)
    assert isinstance(refusal, StateTampered)
    assert "does not unseal: it was changed, or sealed by another enclave" in str(refusal)


def test_forge_with_another_services_sealed_state(host: Host) -> None:
    nowhere = ("127.0.0.1", 9)  # never dialled: the node is only constructed
    frontend = host.deployment.runtime_config(
        f"frontend-{host.root.name}", peers={"authentication": nowhere, "storage": nowhere}
    )
    EnclaveNode(
        host.deployment.images["frontend"],
        parse_runtime_config(frontend.read_bytes(), frontend.parent),
        host.manifest_dir(1) / "manifest.yaml",
        host.manifest_dir(1) / "signatures",
        initialize_state=True,
    ).close()
    shutil.copy(frontend.parent / "state" / SEALED_STATE, host.state)
    refusal = host.refused(1)
    assert isinstance(refusal, StateNotOurs)
    assert "the state of service 'frontend', not 'storage'" in str(refusal)


def test_replay_an_older_sealed_state_is_not_detected_by_sealing(host: Host) -> None:
    # The residual: the copy is authentic, and no monotonic counter tells it is old. What
    # bounds it is the old manifest's own expiry and the time floor (next test).
    shutil.copy(host.root / "state-when-v1", host.state)
    assert host.start(1).manifest.version == 1


# -- the clock: an injected host clock, since no process boundary is needed -------------------


class HostClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@attrs.define
class KeptState:
    """One service's sealed state and manifests, at the keeper's level, on the host's clock."""

    host: Host
    clock: HostClock = attrs.field(factory=lambda: HostClock(NOW))

    def signed(self, version: int, *, issued: dt.datetime, expires: dt.datetime) -> Path:
        directory = self.host.root / f"keeper-v{version}"
        data = Manifest(version=version, expires=expires, enclaves={}, issued=issued).to_bytes()
        directory.mkdir()
        (directory / "manifest.yaml").write_bytes(data)
        self.host.deployment.panel.write_signatures(directory / "sigs", data, by=["alice"])
        self.host.deployment.panel.write_signatures(directory / "sigs", data, by=["bob"])
        return directory

    def keeper(self, directory: Path, *, initialize: bool = False) -> ManifestKeeper:
        return sealed_keeper(
            ManifestTrust(self.host.deployment.panel.trust),
            directory,
            self.host.root / "keeper-state",
            PLATFORM,
            initialize=initialize,
            clock_source=self.clock,
        )


PLATFORM = SimulatedPlatform.create()


@pytest.fixture
def kept(host: Host) -> KeptState:
    return KeptState(host)


def test_clock_set_back_to_revive_an_expired_manifest_after_a_restart(kept: KeptState) -> None:
    old = kept.signed(1, issued=NOW - dt.timedelta(days=90), expires=NOW - dt.timedelta(days=30))
    running = kept.keeper(old, initialize=True)
    assert rejected_checks(running.load) == {"expired"}  # today, it has expired
    # restarted with the process clock set back 59 days, inside the manifest's validity
    kept.clock.now = NOW - dt.timedelta(days=59)
    with pytest.raises(ClockBehindFloor) as caught:
        kept.keeper(old).load()
    assert f"the host clock reads {kept.clock.now:%Y-%m-%dT%H:%M:%SZ}" in str(caught.value)
    assert f"trusted time floor {NOW:%Y-%m-%dT%H:%M:%SZ}" in str(caught.value)
    assert "sealed in this service's state" in str(caught.value)


def test_clock_set_back_before_the_manifests_signed_issued_time(kept: KeptState) -> None:
    # A state initialized now has no floor; the auditors' signed time is what refuses.
    current = kept.signed(3, issued=NOW, expires=NOW + dt.timedelta(days=30))
    kept.clock.now = NOW - dt.timedelta(days=10)
    with pytest.raises(ClockBehindFloor, match=r"\(manifest v3's signed issued time\)"):
        kept.keeper(current, initialize=True).load()


def test_clock_set_back_while_running_stops_the_manifest_in_force(kept: KeptState) -> None:
    current = kept.signed(4, issued=NOW, expires=NOW + dt.timedelta(days=30))
    keeper = kept.keeper(current, initialize=True)
    assert keeper.load().version == 4
    kept.clock.now = NOW - dt.timedelta(days=2)
    with pytest.raises(ClockBehindFloor, match="earlier than this service's trusted time floor"):
        keeper.current()  # what every handshake asks first


def test_a_replayed_state_is_bounded_by_the_old_manifest_and_the_floor(kept: KeptState) -> None:
    old = kept.signed(1, issued=NOW - dt.timedelta(days=20), expires=NOW + dt.timedelta(days=1))
    new = kept.signed(2, issued=NOW, expires=NOW + dt.timedelta(days=30))
    kept.clock.now = NOW - dt.timedelta(days=10)
    kept.keeper(old, initialize=True).load()
    copy = (kept.host.root / "keeper-state").read_bytes()  # the host keeps a copy
    kept.clock.now = NOW
    running = kept.keeper(new)
    running.load()
    kept.clock.now = NOW + dt.timedelta(days=2)
    running.current()  # the floor moves with the clock
    (kept.host.root / "keeper-state").write_bytes(copy)
    # the copy takes the service back to v1 only while v1 is valid ...
    assert rejected_checks(kept.keeper(old).load) == {"expired"}
    # ... and not with a clock set back before the copy's own floor
    kept.clock.now = NOW - dt.timedelta(days=11)
    with pytest.raises(ClockBehindFloor):
        kept.keeper(old).load()


def rejected_checks(call: Callable[[], object]) -> frozenset[str]:
    with pytest.raises(ManifestRejected) as caught:
        call()
    return caught.value.checks
