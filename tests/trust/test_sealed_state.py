"""Sealed service state and the trusted clock: who can read a state, what a first start
and a restart demand, and how the time floor moves."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from teaclave_ma.attestation.attester import (
    SealingKeyRefused,
    SealingPolicy,
    SimulatedAttester,
    SimulatedTdAttester,
)
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.manifest import Manifest, ManifestFormatError, parse_manifest
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.trust.keeper import StateFile
from teaclave_ma.trust.manifest_trust import AcceptedVersion
from teaclave_ma.trust.sealed_state import (
    CLOCK_TOLERANCE,
    NO_FLOOR,
    RESEAL_AFTER,
    ClockBehindFloor,
    ServiceState,
    StateExists,
    StateMissing,
    StateNotOurs,
    StateSealer,
    StateTampered,
    TrustedClock,
)
from tests.trust.sealing_helpers import STORAGE, sealer

T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
STATE = ServiceState(AcceptedVersion(7, "ab" * 32), T0)
UPGRADED = SgxIdentity(b"\x09" * 32, STORAGE.mr_signer, 4, STORAGE.isv_svn + 1, False)
OTHER_PRODUCT = SgxIdentity(STORAGE.mr_enclave, STORAGE.mr_signer, 5, STORAGE.isv_svn, False)


# -- sealing keys -----------------------------------------------------------------------------


def test_simulated_keys_follow_sgx_policies(platform: SimulatedPlatform) -> None:
    storage, upgraded = SimulatedAttester(platform, STORAGE), SimulatedAttester(platform, UPGRADED)
    mrsigner, mrenclave = SealingPolicy.MRSIGNER, SealingPolicy.MRENCLAVE
    assert len(storage.sealing_key(mrsigner)) == 16
    # a rebuild by the same author may ask for its predecessor's MRSIGNER key, not its MRENCLAVE one
    assert upgraded.sealing_key(mrsigner, STORAGE.isv_svn) == storage.sealing_key(mrsigner)
    assert upgraded.sealing_key(mrsigner) != storage.sealing_key(mrsigner)
    assert upgraded.sealing_key(mrenclave) != storage.sealing_key(mrenclave)
    other = SimulatedAttester(platform, OTHER_PRODUCT)
    assert other.sealing_key(mrsigner) != storage.sealing_key(mrsigner)
    # another machine derives other keys for the very same enclave
    assert SimulatedAttester(SimulatedPlatform.create(), STORAGE).sealing_key(
        mrsigner
    ) != storage.sealing_key(mrsigner)


def test_a_key_above_the_own_isv_svn_is_refused(platform: SimulatedPlatform) -> None:
    with pytest.raises(
        SealingKeyRefused, match="ISV SVN 3 was asked for by an enclave at ISV SVN 2"
    ):
        SimulatedAttester(platform, STORAGE).sealing_key(SealingPolicy.MRSIGNER, 3)


def test_the_sealing_secret_survives_save_and_load(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    platform.save(tmp_path / "platform")
    loaded = SimulatedPlatform.load(tmp_path / "platform")
    key = SimulatedAttester(platform, STORAGE).sealing_key(SealingPolicy.MRSIGNER)
    assert SimulatedAttester(loaded, STORAGE).sealing_key(SealingPolicy.MRSIGNER) == key


# -- sealing and unsealing --------------------------------------------------------------------


def test_a_sealed_state_round_trips_and_hides_its_content(platform: SimulatedPlatform) -> None:
    data = sealer(platform).seal(STATE)
    assert sealer(platform).unseal(data, "state") == STATE
    assert b"ab" * 32 not in data and b"2026" not in data


def test_a_rebuild_with_a_higher_isv_svn_reads_its_predecessors_state(
    platform: SimulatedPlatform,
) -> None:
    data = sealer(platform).seal(STATE)
    assert sealer(platform, UPGRADED).unseal(data, "state") == STATE
    # and what the rebuild seals, the older build can no longer read
    newer = sealer(platform, UPGRADED).seal(STATE)
    with pytest.raises(StateNotOurs, match=r"newer build \(ISV SVN 3\) than this one \(2\)"):
        sealer(platform).unseal(newer, "state")


def test_another_service_or_enclave_cannot_read_a_state(platform: SimulatedPlatform) -> None:
    data = sealer(platform).seal(STATE)
    with pytest.raises(StateNotOurs, match="the state of service 'storage', not 'frontend'"):
        sealer(platform, service="frontend").unseal(data, "state")
    # the same service name claimed by another product of the same author: the key differs
    with pytest.raises(StateTampered, match="does not unseal"):
        sealer(platform, OTHER_PRODUCT).unseal(data, "state")
    mrenclave = StateSealer(
        SimulatedAttester(platform, STORAGE), "storage", 2, policy=SealingPolicy.MRENCLAVE
    )
    with pytest.raises(StateNotOurs, match="sealed under key policy 'mrsigner'"):
        mrenclave.unseal(data, "state")
    rebuilt = StateSealer(
        SimulatedAttester(platform, UPGRADED), "storage", 3, policy=SealingPolicy.MRENCLAVE
    )
    with pytest.raises(StateTampered, match="sealed by another enclave"):
        rebuilt.unseal(mrenclave.seal(STATE), "state")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda e: {**e, "sealed": e["sealed"][:-2] + "00"}, "does not unseal"),
        (lambda e: {**e, "nonce": "00" * 12}, "does not unseal"),
        (lambda e: {**e, "isv_svn": 1}, "does not unseal"),  # lower: another key
        (lambda e: {**e, "isv_svn": "2"}, "is not a u16"),
        (lambda e: {**e, "format": "v0"}, "unknown format 'v0'"),
        (lambda e: {"version": 0, "sha256": "00"}, "not a service state"),
        (lambda e: {**e, "format": "teaclave-ma unsealed service state v1"}, "an unsealed state"),
    ],
)
def test_a_changed_state_file_is_refused(
    platform: SimulatedPlatform, edit: object, fragment: str
) -> None:
    envelope = json.loads(sealer(platform).seal(STATE))
    forged = json.dumps(edit(envelope)).encode()  # type: ignore[operator]
    with pytest.raises(StateTampered, match=fragment):
        sealer(platform).unseal(forged, "state")


def test_tdx_has_no_sealing_key_and_needs_the_explicit_opt_in(
    platform: SimulatedPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    td = SimulatedTdAttester(platform, simulated_td_identity(STORAGE))
    with pytest.raises(ConfigError, match="a TDX guest has no sealing key") as caught:
        StateSealer(td, "storage", 2)
    assert caught.value.field == "state.unsealed_ok"
    unsealed = StateSealer(td, "storage", 2, unsealed_ok=True)
    assert "keeps its state UNSEALED" in caplog.text
    data = unsealed.seal(STATE)
    assert unsealed.unseal(data, "state") == STATE
    # a sealing enclave never takes an unsealed state (anyone could have written it) ...
    with pytest.raises(StateTampered, match="an unsealed state, but this enclave seals"):
        sealer(platform).unseal(data, "state")
    # ... and a TD cannot read a sealed one
    with pytest.raises(StateNotOurs, match="this backend has no sealing key"):
        unsealed.unseal(sealer(platform).seal(STATE), "state")


# -- the state file ---------------------------------------------------------------------------


def test_first_start_restart_and_no_silent_reset(
    platform: SimulatedPlatform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state"
    with pytest.raises(StateMissing, match="pass --initialize-state on storage's first start only"):
        StateFile.open(path, sealer(platform))
    first = StateFile.open(path, sealer(platform), initialize=True)
    assert first.state == ServiceState(None, NO_FLOOR)
    assert "initialized a new sealed state" in caplog.text
    first.update(accepted=STATE.accepted, floor=T0)
    with pytest.raises(StateExists, match="never replaces a state"):
        StateFile.open(path, sealer(platform), initialize=True)
    assert StateFile.open(path, sealer(platform)).state == STATE  # untouched by the refusal
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_restart_reseals_under_the_new_builds_key(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    path = tmp_path / "state"
    StateFile.open(path, sealer(platform), initialize=True).update(accepted=STATE.accepted)
    assert StateFile.open(path, sealer(platform, UPGRADED)).state.accepted == STATE.accepted
    assert json.loads(path.read_bytes())["isv_svn"] == UPGRADED.isv_svn
    with pytest.raises(StateNotOurs, match="newer build"):
        StateFile.open(path, sealer(platform))


# -- the trusted clock ------------------------------------------------------------------------


class HostClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_floor_follows_the_clock_and_is_sealed_once_a_minute() -> None:
    host, sealed = HostClock(T0), []
    clock = TrustedClock(T0, sealed.append, host)
    for seconds in (10, 30, 59):
        host.now = T0 + dt.timedelta(seconds=seconds)
        assert clock() == host.now
    assert sealed == []  # handshakes within a minute write nothing
    host.now = T0 + RESEAL_AFTER
    clock()
    assert sealed == [host.now]
    assert clock.floor == host.now


def test_a_clock_behind_the_floor_is_refused_naming_both() -> None:
    host = HostClock(T0)
    clock = TrustedClock(T0, lambda _floor: None, host, floor_source="sealed in this state")
    host.now = T0 - CLOCK_TOLERANCE + dt.timedelta(seconds=1)
    assert clock() == host.now  # a few seconds of skew is no attack
    host.now = T0 - dt.timedelta(days=59)
    with pytest.raises(ClockBehindFloor) as caught:
        clock()
    assert caught.value.check == "clock"
    assert (
        "the host clock reads 2026-09-26T12:00:00Z, earlier than this service's trusted time "
        "floor 2026-11-24T12:00:00Z (sealed in this state)" in str(caught.value)
    )


def test_signed_evidence_of_time_raises_the_floor() -> None:
    host, sealed = HostClock(T0), []
    clock = TrustedClock(NO_FLOOR, sealed.append, host)
    issued = T0 + dt.timedelta(days=1)
    with pytest.raises(ClockBehindFloor, match=r"\(manifest v2's issued time\)"):
        clock.witness(issued, "manifest v2's issued time")
    assert sealed == [issued]  # the evidence counts even though this clock is refused
    host.now = issued
    clock.witness(T0 - dt.timedelta(days=3), "older collateral")  # never moves back
    assert clock.floor == issued


# -- the manifest's signed issued time ---------------------------------------------------------


def test_the_manifest_issued_field_is_optional_and_before_expiry() -> None:
    old = Manifest(version=1, expires=T0, enclaves={})
    assert b"issued" not in old.to_bytes()  # manifests signed before it keep their bytes
    assert parse_manifest(old.to_bytes()).issued is None
    new = Manifest(version=1, expires=T0, enclaves={}, issued=T0 - dt.timedelta(days=1))
    assert parse_manifest(new.to_bytes()) == new
    assert b"issued: '2026-11-23T12:00:00Z'" in new.to_bytes()
    late = new.to_bytes().replace(b"2026-11-23", b"2026-11-25")
    with pytest.raises(ManifestFormatError, match="issued: 2026-11-25T12:00:00Z is not before"):
        parse_manifest(late)
