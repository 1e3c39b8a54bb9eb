"""The rules every service applies to a manifest before it serves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.formats.manifest import AcceptedIdentity
from teaclave_ma.formats.signature import SignatureFormatError, parse_signature
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.trust.keeper import ManifestKeeper
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted, ManifestRejected, ManifestTrust
from teaclave_ma.trust.sealed_state import StateTampered
from tests.trust.sealing_helpers import sealed_keeper, sealer

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=10)
STORAGE = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=4, isv_svn=2, debug=False)


def manifest(panel: AuditorPanel, version: int = 1, expires: dt.datetime = LATER) -> bytes:
    return panel.manifest({"storage": [STORAGE]}, version=version, expires=expires)


def rejected(call: Callable[[], object]) -> ManifestRejected:
    with pytest.raises(ManifestRejected) as caught:
        call()
    return caught.value


def test_a_manifest_signed_by_the_threshold_is_accepted(auditor_panel: AuditorPanel) -> None:
    data = manifest(auditor_panel)
    verified = ManifestTrust(auditor_panel.trust).check(data, auditor_panel.sign(data), NOW)
    assert verified.version == 1
    assert verified.signer_names == ("alice", "bob")
    assert verified.expect("storage", STORAGE).mr_enclave == STORAGE.mr_enclave


def test_signatures_are_checked_on_raw_bytes_before_parsing(auditor_panel: AuditorPanel) -> None:
    trust = ManifestTrust(auditor_panel.trust)
    garbage = b"\xff\xfe: [unclosed"
    assert rejected(lambda: trust.check(garbage, [], NOW)).checks == {"threshold"}
    # signed by enough auditors yet malformed: still a typed refusal, after the signatures
    assert rejected(lambda: trust.check(garbage, auditor_panel.sign(garbage), NOW)).checks == {
        "format"
    }


def test_an_equivalent_reserialisation_does_not_carry_the_signatures(
    auditor_panel: AuditorPanel,
) -> None:
    data = manifest(auditor_panel)
    signatures = auditor_panel.sign(data)
    reformatted = data.replace(b"version: 1", b"version:   1")
    reasons = rejected(
        lambda: ManifestTrust(auditor_panel.trust).check(reformatted, signatures, NOW)
    )
    assert reasons.checks == {"threshold", "signature"}
    assert "does not verify over these manifest bytes" in str(reasons)


def test_unknown_auditor_is_ignored_and_reported(auditor_panel: AuditorPanel) -> None:
    data = manifest(auditor_panel)
    outsider = AuditorPanel.outsider()
    signatures = [
        *auditor_panel.sign(data, by=[0]),
        (f"{outsider.key_id}.sig", outsider.sign(data).to_bytes()),
    ]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(data, signatures, NOW))
    assert "1 of the required 2" in str(error)
    assert "is not a trusted auditor; ignored" in str(error)


def test_the_same_auditor_counts_once(auditor_panel: AuditorPanel) -> None:
    data = manifest(auditor_panel)
    twice = [
        *auditor_panel.sign(data, by=[0]),
        ("copy.sig", auditor_panel.sign(data, by=[0])[0][1]),
    ]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(data, twice, NOW))
    assert "1 of the required 2" in str(error)
    assert "already counted" in str(error)


def test_expired_manifest_is_refused(auditor_panel: AuditorPanel) -> None:
    data = manifest(auditor_panel, expires=NOW - dt.timedelta(seconds=1))
    assert rejected(
        lambda: ManifestTrust(auditor_panel.trust).check(data, auditor_panel.sign(data), NOW)
    ).checks == {"expired"}


def test_rollback_and_same_version_with_other_content_are_refused(
    auditor_panel: AuditorPanel,
) -> None:
    trust = ManifestTrust(auditor_panel.trust)
    v2 = manifest(auditor_panel, version=2)
    trust.accept(v2, auditor_panel.sign(v2), NOW)
    v1 = manifest(auditor_panel, version=1)
    assert "older than v2" in str(rejected(lambda: trust.check(v1, auditor_panel.sign(v1), NOW)))
    other_v2 = auditor_panel.manifest({}, version=2, expires=LATER)
    assert rejected(lambda: trust.check(other_v2, auditor_panel.sign(other_v2), NOW)).checks == {
        "rollback"
    }
    assert (
        trust.check(v2, auditor_panel.sign(v2), NOW).version == 2
    )  # the same bytes again are fine


def test_freeze_a_manifest_that_expires_while_in_use_stops_being_served(
    auditor_panel: AuditorPanel,
) -> None:
    trust = ManifestTrust(auditor_panel.trust)
    data = manifest(auditor_panel)
    trust.accept(data, auditor_panel.sign(data), NOW)
    assert trust.require_current(NOW).version == 1
    assert rejected(lambda: trust.require_current(LATER + dt.timedelta(seconds=1))).checks == {
        "expired"
    }
    assert rejected(lambda: ManifestTrust(auditor_panel.trust).require_current(NOW)).checks == {
        "missing"
    }


@pytest.mark.parametrize(
    ("identity", "fragment"),
    [
        (SgxIdentity(b"\x09" * 32, b"\x02" * 32, 4, 2, False), "mr_enclave 0909"),
        (SgxIdentity(b"\x01" * 32, b"\x09" * 32, 4, 2, False), "mr_signer 0909"),
        (SgxIdentity(b"\x01" * 32, b"\x02" * 32, 5, 2, False), "isv_prod_id 5 != 4"),
        (SgxIdentity(b"\x01" * 32, b"\x02" * 32, 4, 1, False), "isv_svn 1 < min_isv_svn 2"),
        (SgxIdentity(b"\x01" * 32, b"\x02" * 32, 4, 2, True), "debug true != false"),
    ],
)
def test_identity_mismatches_name_the_field_service_and_version(
    auditor_panel: AuditorPanel, identity: SgxIdentity, fragment: str
) -> None:
    data = manifest(auditor_panel, version=7)
    verified = ManifestTrust(auditor_panel.trust).check(data, auditor_panel.sign(data), NOW)
    with pytest.raises(IdentityNotAccepted) as caught:
        verified.expect("storage", identity)
    assert fragment in str(caught.value)
    assert "for service 'storage' by manifest v7" in str(caught.value)
    with pytest.raises(IdentityNotAccepted, match="no entry"):
        verified.expect("frontend", STORAGE)


def test_rolling_upgrade_accepts_either_listed_build(auditor_panel: AuditorPanel) -> None:
    newer = SgxIdentity(b"\x03" * 32, b"\x02" * 32, 4, 3, False)
    data = auditor_panel.manifest({"storage": [STORAGE, newer]}, expires=LATER)
    verified = ManifestTrust(auditor_panel.trust).check(data, auditor_panel.sign(data), NOW)
    assert verified.expect("storage", newer) == AcceptedIdentity(
        newer.mr_enclave, newer.mr_signer, 4, 3, False
    )


# -- the keeper: files, persistence, reloads ----------------------------------------------------


def write(panel: AuditorPanel, tmp_path: Path, data: bytes, by: list[int]) -> None:
    (tmp_path / "manifest.yaml").write_bytes(data)
    for old in (tmp_path / "sigs").glob("*.sig") if (tmp_path / "sigs").exists() else []:
        old.unlink()
    panel.write_signatures(tmp_path / "sigs", data, by=by)


def keeper(
    panel: AuditorPanel, tmp_path: Path, platform: SimulatedPlatform, *, initialize: bool = False
) -> ManifestKeeper:
    return sealed_keeper(
        ManifestTrust(panel.trust), tmp_path, tmp_path / "state", platform, initialize=initialize
    )


def test_accepted_version_survives_a_restart(
    auditor_panel: AuditorPanel, tmp_path: Path, platform: SimulatedPlatform
) -> None:
    write(auditor_panel, tmp_path, manifest(auditor_panel, version=3), [0, 1])
    keeper(auditor_panel, tmp_path, platform, initialize=True).load(NOW)
    kept = sealer(platform).unseal((tmp_path / "state").read_bytes(), "state").accepted
    assert kept is not None and kept.version == 3
    assert b"sha256" not in (tmp_path / "state").read_bytes()  # sealed, not readable
    write(auditor_panel, tmp_path, manifest(auditor_panel, version=2), [0, 1])
    restarted = keeper(auditor_panel, tmp_path, platform)
    assert rejected(lambda: restarted.load(NOW)).checks == {"rollback"}


def test_corrupt_state_is_refused_rather_than_forgotten(
    auditor_panel: AuditorPanel, tmp_path: Path, platform: SimulatedPlatform
) -> None:
    (tmp_path / "state").write_text("{not json")
    with pytest.raises(StateTampered, match="not a service state"):
        keeper(auditor_panel, tmp_path, platform)


def test_a_rejected_reload_keeps_the_manifest_in_force(
    auditor_panel: AuditorPanel,
    tmp_path: Path,
    platform: SimulatedPlatform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(auditor_panel, tmp_path, manifest(auditor_panel, version=1), [0, 1])
    kept = keeper(auditor_panel, tmp_path, platform, initialize=True)
    kept.load(NOW)
    write(auditor_panel, tmp_path, manifest(auditor_panel, version=2), [0])  # under-signed
    assert kept.reload(NOW) is False
    assert "keeping v1 in force" in caplog.text
    assert kept.current(NOW).version == 1
    write(auditor_panel, tmp_path, manifest(auditor_panel, version=2), [1, 2])
    assert kept.reload(NOW) is True
    assert kept.current(NOW).version == 2


def test_signature_files_must_be_well_formed() -> None:
    good = b"algorithm: ed25519\nkey_id: " + b"a" * 64 + b"\nsignature: " + b"b" * 128 + b"\n"
    assert parse_signature(good).key_id == "a" * 64
    for bad, fragment in [
        (good.replace(b"b" * 128, b"b" * 100), "expected 128 hex characters, got 100"),
        (good.replace(b"ed25519", b"rsa"), "does not match"),
        (good + b"extra: 1\n", "unknown field"),
        (b"\xff\xfe", "not UTF-8"),
    ]:
        with pytest.raises(SignatureFormatError, match=fragment):
            parse_signature(bad)
