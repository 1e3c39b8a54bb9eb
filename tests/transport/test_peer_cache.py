"""The verified-certificate cache: successes only, until expiry, policy and manifest on every
use; and the re-check of an open connection's peer before each request."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ObjectIdentifier

from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.pck_extension import SGX_EXTENSION_OID
from teaclave_ma.attestation.quote import Quote
from teaclave_ma.attestation.sim import pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.verifier import ValidityCache
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.transport import peer_verify
from teaclave_ma.transport.credentials import utc_now
from teaclave_ma.transport.errors import EvidenceError
from teaclave_ma.transport.evidence import CertificateEvidence, extract_evidence
from teaclave_ma.transport.peer_verify import PeerIdentity, PeerVerifier
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import (
    AcceptedVersion,
    IdentityNotAccepted,
    ManifestTrust,
    VerifiedManifest,
)
from tests.helpers import MovableClock

STORAGE = SgxIdentity(b"\x61" * 32, b"\x62" * 32, isv_prod_id=4, isv_svn=1, debug=False)
NOW = dt.datetime.now(dt.UTC)


class Manifests:
    """The manifest in force is whichever the test last set; peers are compared with it as a
    service's keeper compares them."""

    def __init__(self, manifest: VerifiedManifest) -> None:
        self.trust = ManifestTrust(AuditorPanel().trust)
        self.manifest = manifest

    @property
    def manifest(self) -> VerifiedManifest:
        return self.trust.loaded()

    @manifest.setter
    def manifest(self, manifest: VerifiedManifest) -> None:
        self.trust.commit(manifest)

    def current(self, now: dt.datetime | None = None) -> VerifiedManifest:
        return self.trust.require_current(now or utc_now())

    def check_peer(
        self, service: str, claimed: AcceptedVersion, now: dt.datetime | None = None
    ) -> None:
        self.trust.check_peer(service, claimed, now or utc_now())


def verified_manifest(services: dict[str, list[SgxIdentity]], version: int = 1) -> VerifiedManifest:
    panel = AuditorPanel()
    data = panel.manifest(services, version=version)  # type: ignore[arg-type]
    return ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)


class Setup:
    def __init__(
        self,
        platform: SimulatedPlatform,
        anchor_platform: SimulatedPlatform | None = None,
        clock: MovableClock | None = None,
    ) -> None:
        self.platform = platform
        self.verifications = 0
        self.manifests = Manifests(verified_manifest({"storage": [STORAGE]}))
        root = (anchor_platform or platform).root_certificate_der
        self.verifier = PeerVerifier(
            self.manifests,
            TrustAnchor.for_root(root, "test"),
            self.collateral_for,
            clock=clock or utc_now,
        )
        self.certificate = self.peer_certificate(self.manifests.manifest.accepted)

    def peer_certificate(self, manifest: AcceptedVersion | None) -> bytes:
        """A genuine storage certificate claiming that its service enforces ``manifest``."""
        return create_ratls_certificate(
            ec.generate_private_key(ec.SECP256R1()),
            lambda rd: self.platform.quote(STORAGE, rd),
            common_name="storage",
            now=NOW,
            lifetime=dt.timedelta(hours=1),
            manifest=manifest,
        )

    def both_load(self, manifest: VerifiedManifest) -> None:
        """``manifest`` is in force here and at the peer, whose certificate now claims it."""
        self.manifests.manifest = manifest
        self.certificate = self.peer_certificate(manifest.accepted)

    def collateral_for(self, quote: Quote) -> Collateral:
        self.verifications += 1  # called once per DCAP verification actually performed
        return Collateral.from_json(self.platform.collateral_json())


def test_a_verified_certificate_is_not_verified_again(platform: SimulatedPlatform) -> None:
    setup = Setup(platform)
    first = setup.verifier.verify(setup.certificate, ["storage"])
    second = setup.verifier.verify(setup.certificate, ["storage"])
    assert first == second
    assert setup.verifications == 1


def test_a_cached_certificate_is_not_parsed_again_but_its_validity_still_holds(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []

    def counting(certificate: bytes) -> CertificateEvidence:
        parsed.append(certificate)
        return extract_evidence(certificate)

    monkeypatch.setattr(peer_verify, "extract_evidence", counting)
    clock = MovableClock(NOW)
    setup = Setup(platform, clock=clock)
    first = setup.verifier.verify(setup.certificate, ["storage"])
    assert setup.verifier.verify(setup.certificate, ["storage"]) == first
    assert len(parsed) == 1  # the second check found it by its bytes, before parsing
    for outside in (-dt.timedelta(hours=1), dt.timedelta(hours=2)):  # before, after validity
        clock.now = NOW + outside
        with pytest.raises(EvidenceError) as caught:
            setup.verifier.verify(setup.certificate, ["storage"])
        assert caught.value.check == "certificate_validity"
    assert setup.verifications == 1
    assert len(parsed) == 3  # checked in full again each time


def test_failures_are_never_cached(platform: SimulatedPlatform) -> None:
    setup = Setup(platform)
    setup.platform = SimulatedPlatform.create()  # collateral another root signed: refused
    for _attempt in range(2):
        with pytest.raises(QuoteVerificationError):
            setup.verifier.verify(setup.certificate, ["storage"])
    assert setup.verifications == 2


def test_policy_is_applied_on_every_use() -> None:
    setup = Setup(SimulatedPlatform.create(tcb_status="SWHardeningNeeded"))
    for _attempt in range(2):
        with pytest.raises(PolicyRejected, match="SWHardeningNeeded is not allowed"):
            setup.verifier.verify(setup.certificate, ["storage"])
    assert setup.verifications == 1  # verified once; refused by the policy both times


def test_a_new_manifest_applies_to_cached_certificates(platform: SimulatedPlatform) -> None:
    setup = Setup(platform)
    setup.verifier.verify(setup.certificate, ["storage"])
    setup.manifests.manifest = verified_manifest({"frontend": [STORAGE]}, version=2)
    with pytest.raises(IdentityNotAccepted, match="by manifest v2"):
        setup.verifier.verify(setup.certificate, ["storage"])
    assert setup.verifications == 1


def test_entries_expire_and_the_cache_is_bounded() -> None:
    cache: ValidityCache[bytes, object] = ValidityCache(size=2)
    marker = object()
    cache.put(b"a", marker, (NOW, NOW + dt.timedelta(minutes=1)))
    assert cache.get(b"a", NOW - dt.timedelta(seconds=1)) is None  # not yet valid, and dropped
    cache.put(b"a", marker, (NOW, NOW + dt.timedelta(minutes=1)))
    assert cache.get(b"a", NOW + dt.timedelta(minutes=1)) is marker  # both ends included
    assert cache.get(b"a", NOW + dt.timedelta(minutes=1, seconds=1)) is None  # expired, dropped
    for key in (b"a", b"b", b"c"):
        cache.put(key, marker, (NOW, NOW + dt.timedelta(minutes=5)))
    assert cache.get(b"a", NOW) is None  # the least recently used went first
    assert cache.get(b"c", NOW) is marker


def test_recheck_refuses_a_certificate_that_expired_since_the_handshake(
    platform: SimulatedPlatform,
) -> None:
    clock = MovableClock(NOW)
    setup = Setup(platform, clock=clock)
    peer = setup.verifier.verify(setup.certificate, ["storage"])
    setup.verifier.recheck(peer)
    clock.advance(dt.timedelta(hours=1, seconds=1))  # the certificate's lifetime, and a second
    with pytest.raises(EvidenceError, match="certificate storage connected with expired") as caught:
        setup.verifier.recheck(peer)
    assert caught.value.check == "certificate_validity"


def test_recheck_refuses_collateral_that_expired_since_the_handshake() -> None:
    clock = MovableClock(NOW)
    setup = Setup(SimulatedPlatform.create(now=NOW, validity=dt.timedelta(minutes=30)), clock=clock)
    peer = setup.verifier.verify(setup.certificate, ["storage"])  # certificate valid for 1 h
    clock.advance(dt.timedelta(minutes=31))
    with pytest.raises(QuoteVerificationError, match="the evidence storage's quote") as caught:
        setup.verifier.recheck(peer)
    assert caught.value.check == "evidence_validity"


def test_nothing_remembered_outlives_the_pck_certificate() -> None:
    """The PCK certificate expires long before the collateral and the peer's certificate: a
    cached verification and an open connection must end with it, as a fresh check would."""
    platform = SimulatedPlatform.create(now=NOW)
    pck = platform.certs["pck"]
    platform.certs["pck"] = pki.issue(
        pki.PCK_CN, platform.keys["pck"], platform.certs["platform_ca"],
        platform.keys["platform_ca"], ca=False, not_before=pck.not_valid_before_utc,
        not_after=NOW + dt.timedelta(minutes=30),
        extensions=[pck.extensions.get_extension_for_oid(ObjectIdentifier(SGX_EXTENSION_OID)).value],
    )  # fmt: skip
    clock = MovableClock(NOW)
    setup = Setup(platform, clock=clock)  # its certificate lives an hour
    peer = setup.verifier.verify(setup.certificate, ["storage"])
    assert peer.evidence_expires == platform.certs["pck"].not_valid_after_utc
    clock.advance(dt.timedelta(minutes=31))
    with pytest.raises(QuoteVerificationError) as caught:
        setup.verifier.recheck(peer)
    assert caught.value.check == "evidence_validity"
    with pytest.raises(QuoteVerificationError, match="PCK") as fresh:
        setup.verifier.verify(setup.certificate, ["storage"])  # not from the cache
    assert setup.verifications == 1  # the expired chain is refused before any collateral
    assert fresh.value.check == "pck_chain_validity"


def test_recheck_refuses_a_peer_that_no_verification_produced(platform: SimulatedPlatform) -> None:
    """Fail closed: an identity built by hand (as handler tests do) carries no evidence."""
    made_up = PeerIdentity("storage", STORAGE, "UpToDate", (), 1, b"\x00" * 32)
    with pytest.raises(EvidenceError):
        Setup(platform).verifier.recheck(made_up)


def test_a_peer_no_inbound_service_accepts_gets_each_services_reason_once(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    other = attrs.evolve(STORAGE, mr_enclave=b"\x71" * 32)
    setup.manifests.manifest = verified_manifest({"frontend": [other], "kms": [other]})
    with pytest.raises(IdentityNotAccepted) as caught:
        setup.verifier.verify(setup.certificate, ["frontend", "kms"])
    message = str(caught.value)
    assert message.startswith(
        f"peer {STORAGE.measurement_text} is not accepted for services 'frontend', 'kms'"
    )
    assert "it matches no entry of any of them (frontend: mr_enclave 616161" in message
    assert "; kms: mr_enclave 616161" in message
    assert message.count(STORAGE.measurement_text) == 1  # the peer is named once
