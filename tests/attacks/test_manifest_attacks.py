"""Attack catalogue, the manifest and the trust in it: one test per attack on what auditors
sign and what a service accepts, each asserting the typed refusal and what it names.

Most attacks need only the verifier (``ManifestTrust``) or its file keeper; the freeze is
played against a running ``storage`` service, and the swapped trust file against real
builds of the example service. TUF's classes of metadata attack (rollback, freeze,
mix-and-match, endless data) are here where they apply; docs/attacks.md says which do not.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import teaclave_ma.rpc.server as server_module
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.crypto.auditor_key import AuditorPublicKey
from teaclave_ma.enclave.errors import ImageError
from teaclave_ma.enclave.image import CONTENT, TRUST_FILE, load_image, measure_source
from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import MAX_MANIFEST_BYTES
from teaclave_ma.formats.signature import (
    MAX_SIGNATURE_BYTES,
    MAX_SIGNATURE_FILES,
    DetachedSignature,
    SignatureFormatError,
    read_signature_dir,
)
from teaclave_ma.formats.trust import TrustFileError, parse_trust_file
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer, TransportError
from teaclave_ma.trust.keeper import ManifestKeeper
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted, ManifestRejected, ManifestTrust
from tests.helpers import record_raised, traced_peak_memory, wait_until
from tests.integration.conftest import SERVICES_DIR, RuntimeFactory, deployment, runtimes  # noqa: F401
from tests.trust.sealing_helpers import sealed_keeper

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=10)
STORAGE = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=4, isv_svn=2, debug=False)
FRONTEND = SgxIdentity(b"\x03" * 32, b"\x02" * 32, isv_prod_id=3, isv_svn=1, debug=False)


def manifest(version: int = 1, expires: dt.datetime = LATER, **services: SgxIdentity) -> bytes:
    return AuditorPanel.manifest(
        {name: [identity] for name, identity in (services or {"storage": STORAGE}).items()},
        version=version,
        expires=expires,
    )


def rejected(call: Callable[[], object]) -> ManifestRejected:
    with pytest.raises(ManifestRejected) as caught:
        call()
    return caught.value


# -- signatures: who vouched for these exact bytes --------------------------------------------


def test_manifest_tampered_after_signing(auditor_panel: AuditorPanel) -> None:
    data = manifest()
    signatures = auditor_panel.sign(data, by=[0, 1, 2])
    tampered = data.replace(STORAGE.mr_enclave.hex().encode(), b"ab" * 32)  # admit another build
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(tampered, signatures, NOW))
    assert error.checks == {"threshold", "signature"}
    assert "0 of the required 2 trusted auditor signatures (valid: none)" in str(error)
    for auditor in auditor_panel.auditors:
        assert (
            f"signature by auditor {auditor.name!r} does not verify over these manifest bytes"
            in (str(error))
        )


@pytest.mark.parametrize("claims", ["its own key id", "a trusted auditor's key id"])
def test_signature_by_an_unknown_auditor(auditor_panel: AuditorPanel, claims: str) -> None:
    data = manifest()
    outsider = AuditorPanel.outsider()
    signature = outsider.sign(data)
    if claims == "a trusted auditor's key id":
        # The outsider names bob as signer: the key looked up is bob's, which did
        # not make this signature.
        signature = DetachedSignature(auditor_panel.auditors[1].key_id, signature.signature)
    signatures = [*auditor_panel.sign(data, by=[0]), ("outsider.sig", signature.to_bytes())]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(data, signatures, NOW))
    assert error.checks == {"threshold", "signature"}
    assert "1 of the required 2 trusted auditor signatures (valid: alice)" in str(error)
    if claims == "its own key id":
        assert f"key {outsider.key_id[:16]}... is not a trusted auditor; ignored" in str(error)
    else:
        assert "signature by auditor 'bob' does not verify over these manifest bytes" in (
            str(error)
        )


def test_the_same_auditor_counted_twice_by_two_signature_files(
    auditor_panel: AuditorPanel,
) -> None:
    data = manifest()
    ((name, signature),) = auditor_panel.sign(data, by=[0])
    copies = [(name, signature), ("second-copy.sig", signature)]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(data, copies, NOW))
    assert error.checks == {"threshold", "signature"}
    assert "1 of the required 2 trusted auditor signatures (valid: alice)" in str(error)
    assert "second-copy.sig: auditor 'alice' already counted; counted once" in str(error)


@pytest.mark.parametrize("pem_spelling", ["the same PEM", "the PEM wrapped differently"])
def test_the_same_auditor_counted_twice_under_two_names_in_the_trust_file(
    auditor_panel: AuditorPanel, pem_spelling: str
) -> None:
    first = auditor_panel.auditors[0]
    pem = first.key.public_key.to_pem().decode()
    if pem_spelling == "the PEM wrapped differently":
        # Another text for the same key: the check compares keys, not their spelling.
        body = "".join(pem.splitlines()[1:-1])
        pem = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(
            body[i : i + 20] for i in range(0, len(body), 20)
        )
        pem += "\n-----END PUBLIC KEY-----\n"
        assert AuditorPublicKey.from_pem(pem.encode()) == first.key.public_key
    second_name = "".join(f"    {line}\n" for line in pem.splitlines())
    forged = auditor_panel.trust_bytes + f"- name: mallory\n  public_key: |\n{second_name}".encode()
    with pytest.raises(TrustFileError) as caught:
        parse_trust_file(forged)
    assert caught.value.field == "auditors[3].public_key"
    assert f"key {first.key_id[:16]}... of 'mallory' is already listed for 'alice'" in str(
        caught.value
    )
    assert "duplicate keys would inflate the threshold" in str(caught.value)


def test_threshold_not_met(make_auditor_panel: Callable[..., AuditorPanel]) -> None:
    panel = make_auditor_panel(count=5, threshold=3)
    data = manifest()
    error = rejected(
        lambda: ManifestTrust(panel.trust).check(data, panel.sign(data, by=[1, 4]), NOW)
    )
    assert error.checks == {"threshold"}
    assert (
        str(error) == "2 of the required 3 trusted auditor signatures (valid: bob, auditor4)"
    )


# -- time and versions: rollback and freeze ---------------------------------------------------


def test_expired_manifest(auditor_panel: AuditorPanel) -> None:
    data = manifest(version=4, expires=NOW)
    error = rejected(
        lambda: ManifestTrust(auditor_panel.trust).check(data, auditor_panel.sign(data), NOW)
    )
    assert error.checks == {"expired"}
    assert str(error) == "manifest v4 expired at 2026-11-24T12:00:00Z"


def test_rollback_to_an_older_version(auditor_panel: AuditorPanel) -> None:
    trust = ManifestTrust(auditor_panel.trust)
    newer, older = manifest(version=3), manifest(version=2)
    trust.accept(newer, auditor_panel.sign(newer), NOW)
    error = rejected(lambda: trust.check(older, auditor_panel.sign(older), NOW))
    assert error.checks == {"rollback"}
    assert "manifest v2 is older than v3, which this service has already accepted" in str(error)


def test_rollback_to_the_same_version_with_other_bytes(auditor_panel: AuditorPanel) -> None:
    trust = ManifestTrust(auditor_panel.trust)
    first = manifest(version=3)
    trust.accept(first, auditor_panel.sign(first), NOW)
    other = manifest(version=3, storage=STORAGE, frontend=FRONTEND)  # properly signed, too
    error = rejected(lambda: trust.check(other, auditor_panel.sign(other), NOW))
    assert error.checks == {"rollback"}
    assert "manifest v3 differs from the v3 already accepted" in str(error)


def test_rollback_after_a_restart(auditor_panel: AuditorPanel, tmp_path: Path) -> None:
    platform = SimulatedPlatform.create()

    def keeper(first: bool) -> ManifestKeeper:  # a fresh process: only the sealed state remembers
        trust = ManifestTrust(auditor_panel.trust)
        return sealed_keeper(trust, tmp_path, tmp_path / "state", platform, initialize=first)

    for version, expected in [(3, None), (2, "older than v3")]:
        data = manifest(version=version)
        (tmp_path / "manifest.yaml").write_bytes(data)
        auditor_panel.write_signatures(tmp_path / "sigs", data)
        if expected is None:
            assert keeper(first=True).load(NOW).version == version
        else:
            assert expected in str(rejected(lambda: keeper(first=False).load(NOW)))


def test_freeze_a_manifest_kept_past_its_expiry_stops_a_running_service(
    deployment: SimulatedDeployment,  # noqa: F811
    runtimes: RuntimeFactory,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An attacker who can stop new manifests from arriving keeps the last one in place; it
    # must lose its force at its expiry, for open connections and new handshakes alike.
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
    entries = {
        name: [accepted(deployment.images[name].identity)] for name in ("frontend", "storage")
    }
    data = deployment.panel.manifest(entries, version=1, expires=expires)
    (tmp_path / "manifest.yaml").write_bytes(data)
    deployment.panel.write_signatures(tmp_path / "signatures", data, by=["alice", "bob"])
    refusals = record_raised(monkeypatch, server_module, "handshake")
    storage = runtimes(
        "storage", manifest=tmp_path / "manifest.yaml", signatures=tmp_path / "signatures"
    )
    address = storage.start()
    frontend = runtimes(
        "frontend",
        manifest=tmp_path / "manifest.yaml",
        signatures=tmp_path / "signatures",
        storage=address,
        authentication=address,
    )
    # Frontend's own check of storage, held before the expiry: only storage's refusal counts.
    before_expiry = PeerVerifier(
        frontend.keeper,
        frontend.attestation.anchor,
        frontend.attestation.collateral_for,
        clock=lambda: expires - dt.timedelta(seconds=1),
    )
    open_connection = PeerClient("storage", address, frontend.credentials, before_expiry)
    assert open_connection.call("keys") == []

    assert wait_until(lambda: dt.datetime.now(dt.UTC) > expires, timeout=10)
    expired_at = (
        f"manifest v1 expired at {expires:%Y-%m-%dT%H:%M:%SZ} and no newer one was accepted"
    )
    assert rejected(storage.keeper.current).checks == {"expired"}
    with pytest.raises(
        TransportError, match=f"HTTP 403.*attestation no longer accepted: {expired_at}"
    ):
        open_connection.call("keys")
    fresh = PeerClient("storage", address, frontend.credentials, before_expiry, timeout=5)
    with fresh, pytest.raises((RefusedByPeer, TransportError)):
        fresh.call("keys")
    open_connection.close()
    assert wait_until(lambda: refusals)
    (refusal,) = refusals
    assert isinstance(refusal, PeerRejected)
    assert isinstance(refusal.reason, ManifestRejected)
    assert refusal.reason.checks == {"expired"}
    assert expired_at in str(refusal)


# -- the trust file embedded in the image -------------------------------------------------------


def test_trust_file_swapped_changes_the_measurement(
    deployment: SimulatedDeployment,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Whoever builds storage with a trust file of their own auditors (who would sign
    # anything) gets another MRENCLAVE, which the real auditors' manifest does not accept.
    reviewed = deployment.images["storage"].identity
    attackers = AuditorPanel().write_trust(tmp_path / "attackers.yaml")
    swapped = measure_source(SERVICES_DIR / "storage", attackers, deployment.author_key)
    assert swapped.mr_signer == reviewed.mr_signer  # the same author signed both
    verified = ManifestTrust(deployment.panel.trust).check(
        deployment.manifest_path.read_bytes(),
        read_signature_dir(deployment.signatures_dir),
        dt.datetime.now(dt.UTC),
    )
    with pytest.raises(IdentityNotAccepted) as caught:
        verified.expect("storage", swapped)
    assert (
        f"mr_enclave {swapped.mr_enclave.hex()[:16]}... != {reviewed.mr_enclave.hex()[:16]}..."
        in str(caught.value)
    )


def test_trust_file_swapped_inside_a_built_image(
    deployment: SimulatedDeployment,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Replacing the embedded trust file after the build breaks the image's own measurement.
    image = deployment.images["storage"]
    copy = Path(shutil.copytree(image.root, tmp_path / "image"))
    (copy / CONTENT / TRUST_FILE).write_bytes(AuditorPanel().trust_bytes)
    with pytest.raises(ImageError) as caught:
        load_image(copy)
    assert caught.value.check == "image_integrity"
    assert f"!= signed {image.identity.mr_enclave.hex()}" in str(caught.value)


# -- TUF's mix-and-match and endless data ------------------------------------------------------


def test_mix_and_match_signatures_of_one_manifest_with_another(auditor_panel: AuditorPanel) -> None:
    signed = manifest(version=5)
    presented = manifest(version=5, storage=FRONTEND)
    error = rejected(
        lambda: ManifestTrust(auditor_panel.trust).check(presented, auditor_panel.sign(signed), NOW)
    )
    assert error.checks == {"threshold", "signature"}
    assert "does not verify over these manifest bytes" in str(error)


def test_mix_and_match_signatures_of_two_manifests(auditor_panel: AuditorPanel) -> None:
    # Each auditor signed a different manifest; together they are not two votes for either.
    first, second = manifest(version=5), manifest(version=5, storage=FRONTEND)
    signatures = [*auditor_panel.sign(first, by=[0]), *auditor_panel.sign(second, by=[1])]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(first, signatures, NOW))
    assert "1 of the required 2 trusted auditor signatures (valid: alice)" in str(error)
    assert "signature by auditor 'bob' does not verify over these manifest bytes" in str(error)


def test_mix_and_match_entries_of_two_signed_manifests(auditor_panel: AuditorPanel) -> None:
    # The storage entry of one signed manifest and the frontend entry of another, spliced.
    first, second = manifest(storage=STORAGE), manifest(frontend=FRONTEND)
    frontend_entry = second[second.index(b"  frontend:") :]
    spliced = first.replace(b"enclaves:\n", b"enclaves:\n" + frontend_entry)
    signatures = [*auditor_panel.sign(first), *auditor_panel.sign(second)]
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(spliced, signatures, NOW))
    assert "0 of the required 2 trusted auditor signatures (valid: none)" in str(error)


def test_a_signed_manifest_that_says_two_things_is_refused(auditor_panel: AuditorPanel) -> None:
    # A duplicate key: YAML readers differ on which one wins, so what the auditors read in
    # review and what a service enforces could differ. Properly signed, still refused.
    data = manifest()
    twice = data + data[data.index(b"  storage:") :].replace(b"01" * 32, b"ab" * 32)
    error = rejected(
        lambda: ManifestTrust(auditor_panel.trust).check(twice, auditor_panel.sign(twice), NOW)
    )
    assert error.checks == {"format"}
    assert "signed manifest is malformed: storage: duplicate key at line 10" in str(error)


def test_endless_data_a_manifest_larger_than_the_limit_is_not_verified(
    auditor_panel: AuditorPanel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    original = AuditorPublicKey.verify

    def counting(key: AuditorPublicKey, message: bytes, signature: bytes) -> bool:
        calls.append(message)
        return original(key, message, signature)

    monkeypatch.setattr(AuditorPublicKey, "verify", counting)
    huge = manifest() + b"#" * MAX_MANIFEST_BYTES
    signatures = auditor_panel.sign(manifest())  # never looked at
    error = rejected(lambda: ManifestTrust(auditor_panel.trust).check(huge, signatures, NOW))
    assert error.checks == {"size"}
    assert f"larger than the limit of {MAX_MANIFEST_BYTES}" in str(error)
    assert calls == []  # not one signature was checked over it


def test_endless_data_an_endless_manifest_file_is_refused_unread(
    auditor_panel: AuditorPanel, tmp_path: Path
) -> None:
    auditor_panel.write_signatures(tmp_path / "sigs", manifest())
    keeper = ManifestKeeper(
        ManifestTrust(auditor_panel.trust), Path("/dev/zero"), tmp_path / "sigs"
    )
    with traced_peak_memory() as peak, pytest.raises(InputError) as caught:
        keeper.load(NOW)
    assert caught.value.field == "/dev/zero"
    assert f"larger than the limit of {MAX_MANIFEST_BYTES} bytes; refused unparsed" in str(
        caught.value
    )
    assert peak.bytes < 2 * MAX_MANIFEST_BYTES


def test_endless_data_a_huge_signature_file_is_refused_unread(
    auditor_panel: AuditorPanel, tmp_path: Path
) -> None:
    data = manifest()
    (tmp_path / "manifest.yaml").write_bytes(data)
    auditor_panel.write_signatures(tmp_path / "sigs", data)
    huge = tmp_path / "sigs" / "huge.sig"
    huge.touch()
    os.truncate(huge, 1 << 30)  # sparse: a gigabyte on paper, nothing on disk
    keeper = ManifestKeeper(
        ManifestTrust(auditor_panel.trust), tmp_path / "manifest.yaml", tmp_path / "sigs"
    )
    with traced_peak_memory() as peak, pytest.raises(SignatureFormatError) as caught:
        keeper.load(NOW)
    assert caught.value.field == str(huge)
    assert f"larger than the limit of {MAX_SIGNATURE_BYTES} bytes" in str(caught.value)
    assert peak.bytes < 1 << 20


def test_endless_data_too_many_signature_files(auditor_panel: AuditorPanel, tmp_path: Path) -> None:
    data = manifest()
    signature = auditor_panel.sign(data, by=[0])[0][1]
    (tmp_path / "sigs").mkdir()
    for index in range(MAX_SIGNATURE_FILES + 1):
        (tmp_path / "sigs" / f"copy-{index}.sig").write_bytes(signature)
    (tmp_path / "manifest.yaml").write_bytes(data)
    keeper = ManifestKeeper(
        ManifestTrust(auditor_panel.trust), tmp_path / "manifest.yaml", tmp_path / "sigs"
    )
    with pytest.raises(SignatureFormatError) as caught:
        keeper.load(NOW)
    assert caught.value.field == str(tmp_path / "sigs")
    assert (
        f"{MAX_SIGNATURE_FILES + 1} signature files, more than the limit of {MAX_SIGNATURE_FILES}"
        in (str(caught.value))
    )
