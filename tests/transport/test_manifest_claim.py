"""Freshness from peers: every RA-TLS certificate claims the manifest its service enforces,
bound by its quote; a peer on an older or a different manifest is refused, and one on a
newer manifest supersedes ours until we have reloaded one at least as new."""

from __future__ import annotations

import datetime as dt
import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation.attester import SimulatedAttester
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.transport.credentials import RotatingCredentials
from teaclave_ma.transport.errors import CertificateFormatError, EvidenceError
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    MANIFEST_CLAIM,
    TCG_EVIDENCE_OID,
    MissingClaim,
    bound_quote,
    extract_evidence,
    peer_manifest,
    tcg_claims,
)
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import (
    AcceptedVersion,
    ManifestSuperseded,
    PeerManifestDiffers,
    PeerManifestOlder,
)
from tests.helpers import craft_certificate, legacy_quote, spki_of, tcg_extension
from tests.transport.test_peer_cache import NOW, STORAGE, Setup, verified_manifest


def claim(version: int, content: bytes = b"") -> AcceptedVersion:
    return AcceptedVersion(
        version, hashlib.sha256(b"manifest %d%s" % (version, content)).hexdigest()
    )


def certificate(platform: SimulatedPlatform, manifest: AcceptedVersion | None, **kw: bool) -> bytes:
    return create_ratls_certificate(
        ec.generate_private_key(ec.SECP256R1()),
        lambda rd: platform.quote(STORAGE, rd),
        common_name="storage",
        now=NOW,
        lifetime=dt.timedelta(hours=1),
        manifest=manifest,
        **kw,
    )


# -- the claim in the certificate ----------------------------------------------------------------


def test_the_claim_round_trips_inside_the_bound_tcg_claims(platform: SimulatedPlatform) -> None:
    evidence = extract_evidence(certificate(platform, claim(7)))
    bound_quote(evidence)  # the TCG quote's report_data binds the claims holding it
    assert peer_manifest(evidence) == claim(7)
    assert evidence.tcg_claims is not None
    assert cbor2.loads(evidence.tcg_claims)[MANIFEST_CLAIM] == [7, bytes.fromhex(claim(7).sha256)]


def test_an_edited_claim_breaks_the_report_data_binding(platform: SimulatedPlatform) -> None:
    """The claims are re-signed into a certificate of the same key (as only the enclave
    could), but the TCG quote was made over the v1 claims."""
    key = ec.generate_private_key(ec.SECP256R1())
    original = tcg_claims(spki_of(key), claim(1))
    quote = platform.quote(STORAGE, hashlib.sha256(original).digest() + bytes(32))
    edited = tcg_claims(spki_of(key), claim(9))
    der = craft_certificate(
        key,
        [
            (LEGACY_QUOTE_OID, legacy_quote(platform, STORAGE, key)),
            (TCG_EVIDENCE_OID, tcg_extension(quote, edited)),
        ],
    )
    with pytest.raises(
        EvidenceError, match="TCG evidence: quote report_data does not bind"
    ) as caught:
        bound_quote(extract_evidence(der))
    assert caught.value.check == "report_data_binding"


@pytest.mark.parametrize("tcg", [True, False], ids=["tcg-without-claim", "legacy-only"])
def test_a_certificate_without_the_claim_is_refused_naming_it(
    platform: SimulatedPlatform, tcg: bool
) -> None:
    evidence = extract_evidence(certificate(platform, None, tcg=tcg))
    bound_quote(evidence)  # otherwise genuine
    with pytest.raises(MissingClaim, match="no 'teaclave-ma/manifest' claim") as caught:
        peer_manifest(evidence)
    assert caught.value.check == "missing_claim"
    assert caught.value.claim == MANIFEST_CLAIM


def test_gramines_real_certificate_still_parses_and_has_no_claim(gramine_cert: bytes) -> None:
    evidence = extract_evidence(gramine_cert)
    bound_quote(evidence)
    with pytest.raises(MissingClaim, match="its TCG claims hold no manifest version"):
        peer_manifest(evidence)


@pytest.mark.parametrize(
    "value",
    [7, [7], [True, bytes(32)], [-1, bytes(32)], [7, bytes(31)], [7, "00" * 32], [7, bytes(32), 1]],
    ids=["not-a-list", "short", "bool-version", "negative", "short-digest", "text-digest", "long"],
)
def test_a_malformed_claim_is_refused(platform: SimulatedPlatform, value: object) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = cbor2.loads(tcg_claims(spki))
    claims[MANIFEST_CLAIM] = value
    encoded = cbor2.dumps(claims)
    quote = platform.quote(STORAGE, hashlib.sha256(encoded).digest() + bytes(32))
    der = craft_certificate(key, [(TCG_EVIDENCE_OID, tcg_extension(quote, encoded))])
    evidence = extract_evidence(der)
    bound_quote(evidence)
    with pytest.raises(
        CertificateFormatError, match="must be \\[unsigned version, 32-byte"
    ) as caught:
        peer_manifest(evidence)
    assert caught.value.field == MANIFEST_CLAIM


def test_credentials_reissue_when_the_manifest_in_force_changes(
    platform: SimulatedPlatform,
) -> None:
    in_force = [claim(1)]
    credentials = RotatingCredentials(
        SimulatedAttester(platform, STORAGE), "storage", manifest=lambda: in_force[0]
    )
    first = credentials.current()
    assert credentials.current() is first  # nothing changed: no new certificate
    in_force[0] = claim(2)  # a reload
    second = credentials.current()
    assert credentials.generation == 2
    der = second.certificate.public_bytes(serialization.Encoding.DER)
    assert peer_manifest(extract_evidence(der)) == claim(2)


# -- the comparison, at the peer check -----------------------------------------------------------


def test_a_peer_on_an_older_manifest_is_refused_naming_both_versions(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    setup.both_load(verified_manifest({"storage": [STORAGE]}, version=2))
    with pytest.raises(PeerManifestOlder) as caught:
        setup.verifier.verify(setup.peer_certificate(claim(1)), ["storage"])
    assert str(caught.value) == (
        "storage runs manifest v1, older than v2 in force here: storage must reload v2 or newer"
    )
    assert caught.value.check == "peer_manifest_older"
    setup.verifier.verify(setup.certificate, ["storage"])  # ours is not superseded by it


def test_a_peer_on_another_manifest_of_the_same_version_is_refused(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    with pytest.raises(PeerManifestDiffers, match="the auditors signed two different v1") as caught:
        setup.verifier.verify(setup.peer_certificate(claim(1, b"fork")), ["storage"])
    assert caught.value.check == "peer_manifest_differs"


def test_a_peer_on_a_newer_manifest_stops_new_connections_until_a_reload(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    open_peer = setup.verifier.verify(setup.certificate, ["storage"])
    v2 = verified_manifest({"storage": [STORAGE]}, version=2)
    newer = setup.peer_certificate(v2.accepted)
    message = "manifest v2 is in force at storage; this service has v1: reload"
    with pytest.raises(ManifestSuperseded) as caught:
        setup.verifier.verify(newer, ["storage"])
    assert str(caught.value) == message
    assert caught.value.check == "superseded"
    # Every new connection is refused now, a peer on our own v1 too, and open ones end.
    with pytest.raises(ManifestSuperseded, match=message):
        setup.verifier.verify(setup.certificate, ["storage"])
    with pytest.raises(ManifestSuperseded, match=message):
        setup.verifier.recheck(open_peer)
    setup.manifests.manifest = v2  # this service reloads v2
    assert setup.verifier.verify(newer, ["storage"]).manifest_version == 2


def test_a_newer_manifest_is_believed_only_from_an_accepted_peer(
    platform: SimulatedPlatform,
) -> None:
    """A stranger's claim of v9 supersedes nothing: it is refused before its claim counts."""
    setup = Setup(platform)
    stranger = SimulatedPlatform.create()
    with pytest.raises(QuoteVerificationError, match="not the trusted root") as caught:
        setup.verifier.verify(Setup(stranger).peer_certificate(claim(9)), ["storage"])
    assert caught.value.check == "pck_chain"
    setup.verifier.verify(setup.certificate, ["storage"])


def test_a_certificate_without_the_claim_costs_no_collateral_fetch(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    with pytest.raises(MissingClaim, match="no 'teaclave-ma/manifest' claim"):
        setup.verifier.verify(setup.peer_certificate(None), ["storage"])
    assert setup.verifications == 0
