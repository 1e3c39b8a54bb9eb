"""Verification of a peer's RA-TLS certificate, end to end.

In order: a manifest is in force (and not expired: no freeze), the certificate is within
its validity, it carries a quote whose report_data binds the certificate's key, the quote
verifies under the trusted root with current collateral and the TCB policy, and the
attested identity matches a manifest entry of one of the services expected on this edge,
and the manifest the peer's certificate claims to enforce is the one in force here: an older
or a different one is refused, and a newer one supersedes ours (``ManifestSuperseded``: no
connection is accepted until this service has reloaded one at least as new).

Collateral may have to be fetched from a PCCS, so nothing a stranger sends may cost a
fetch: before it, the quote's PCK chain must lead to the trusted root (signatures and
validity), and the quoted enclave must be one that the manifest could accept here (its
measurement, and its debug flag) - checks that only ever refuse, since the quote is not
verified yet. What is left to reach the PCCS is a genuine platform's PCK chain, whose
collateral is fetched once for all (``attestation.pccs``).

An open connection is worth no more than the evidence it was opened with: before each
request, ``recheck`` refuses a peer whose certificate or quote collateral has expired
since the handshake (the peer must reconnect with fresh evidence), and one that the
manifest in force no longer accepts, or every peer once that manifest is superseded: our
checks are then out of date. A peer left on an older manifest by our reload keeps its open
connections (its identity is checked against ours), but opens no new one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import PolicyRejected, QuoteVerificationError
from teaclave_ma.attestation.policy import TCB_STATUSES, VerificationPolicy
from teaclave_ma.attestation.quote import Quote
from teaclave_ma.attestation.verifier import (
    ValidityCache,
    VerifiedQuote,
    apply_policy,
    verified_pck_chain,
    verify_quote,
)
from teaclave_ma.identity import PeerMeasurement, Platform
from teaclave_ma.observability.events import NO_OBSERVER, Observer
from teaclave_ma.transport.credentials import Clock, utc_now
from teaclave_ma.transport.errors import EvidenceError
from teaclave_ma.transport.evidence import (
    bound_quote,
    check_validity,
    extract_evidence,
    peer_manifest,
)
from teaclave_ma.trust.manifest_trust import AcceptedVersion, IdentityNotAccepted, VerifiedManifest

log = logging.getLogger(__name__)

CollateralFor = Callable[[Quote], Collateral]
# For a PeerIdentity not made by ``verify`` (handler tests): evidence that never was current.
NO_EVIDENCE = dt.datetime.min.replace(tzinfo=dt.UTC)


class ManifestSource(Protocol):
    def current(self, now: dt.datetime | None = None) -> VerifiedManifest: ...

    def check_peer(
        self, service: str, claimed: AcceptedVersion, now: dt.datetime | None = None
    ) -> None: ...


@attrs.frozen
class PeerIdentity:
    """Who is on the other end, as attested and as accepted by the manifest."""

    service: str
    identity: PeerMeasurement
    tcb_status: str
    advisory_ids: tuple[str, ...]
    manifest_version: int
    certificate_sha256: bytes
    # Until when the evidence behind the connection holds: the peer certificate's
    # notAfter, and when the evidence its quote was verified with first stops being valid.
    certificate_not_after: dt.datetime = attrs.field(default=NO_EVIDENCE, kw_only=True)
    evidence_expires: dt.datetime = attrs.field(default=NO_EVIDENCE, kw_only=True)
    # The platform its quote's PCK certificate names (None: not made by ``verify``).
    platform: Platform | None = attrs.field(default=None, kw_only=True)

    @property
    def attested(self) -> bool:
        """Always True (``rpc.outside.UnattestedPeer`` is the caller that is not)."""
        return True

    def describe(self) -> str:
        return f"{self.service} ({self.identity.measurement_text[:28]}..., tcb {self.tcb_status})"


DEFAULT_POLICY = VerificationPolicy()  # UpToDate only
# Verification proper, before any relying party's policy (Revoked is refused regardless).
EVERY_POLICY = VerificationPolicy(allowed_tcb_statuses=TCB_STATUSES - {"Revoked"}, allow_debug=True)


@attrs.frozen
class VerifiedCertificate:
    """What a certificate's check established, short of policy and manifest: its DER's
    SHA-256, its validity, its verified quote (bound to its key), and the manifest its
    claims (bound by the quote's report_data) say the peer enforces."""

    sha256: bytes
    not_after: dt.datetime
    quote: VerifiedQuote
    manifest: AcceptedVersion


class PeerVerifier:
    def __init__(
        self,
        manifests: ManifestSource,
        anchor: TrustAnchor,
        collateral_for: CollateralFor,
        policy: VerificationPolicy = DEFAULT_POLICY,
        *,
        clock: Clock = utc_now,
        cache_size: int = 1024,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._manifests = manifests
        self._anchor = anchor
        self._collateral_for = collateral_for
        self._policy = policy  # the image's measured TCB policy; debug is per edge
        self._clock = clock
        self._cache: ValidityCache[bytes, VerifiedCertificate] = ValidityCache(cache_size)
        self._observer = observer

    def _attested(self, certificate: bytes, now: dt.datetime, edge: _Edge) -> VerifiedCertificate:
        """The certificate, parsed, within its validity, its quote bound and verified: from
        the cache, or checked now and cached.

        The cache is looked up by the certificate's bytes before any parsing, which is most
        of the cost of a cached check. Only successes are cached, and an entry is used only
        inside the certificate's validity and before its collateral expires; the TCB policy
        and the manifest are applied on every use, so a changed manifest takes effect at
        once. On a miss, a quote that could never be accepted on ``edge`` is refused before
        its collateral is looked up."""
        key = hashlib.sha256(certificate).digest()
        cached = self._cache.get(key, now)
        self._observer.certificate_cache(hit=cached is not None)
        if cached is not None:
            return cached
        evidence = extract_evidence(certificate)
        check_validity(evidence, now)
        quote = bound_quote(evidence)
        claimed = peer_manifest(evidence)  # a certificate without the claim costs no fetch
        pck = verified_pck_chain(quote, self._anchor, now).extension
        edge.refuse_unacceptable(quote, Platform(pck.fmspc, pck.ppid))
        verified = verify_quote(quote, self._collateral_for(quote), now, EVERY_POLICY, self._anchor)
        self._observer.collateral_expiry(verified.evidence_expires)
        entry = VerifiedCertificate(evidence.sha256, evidence.not_after, verified, claimed)
        self._cache.put(
            key, entry, (evidence.not_before, min(evidence.not_after, verified.evidence_expires))
        )
        return entry

    def recheck(self, peer: PeerIdentity) -> None:
        """Before each request on an open connection: does the peer's evidence still hold,
        and does the manifest in force now still accept it? Its certificate or collateral
        may have expired, a newer manifest may have dropped it, or the one in force may
        have expired or been superseded by a peer's newer one; each ends the connection."""
        now = self._clock()
        if now > peer.certificate_not_after:
            raise EvidenceError(
                "certificate_validity",
                f"the certificate {peer.service} connected with expired at "
                f"{peer.certificate_not_after:%Y-%m-%dT%H:%M:%SZ}; it must reconnect with a fresh one",
            )
        if now > peer.evidence_expires:
            raise QuoteVerificationError(
                "evidence_validity",
                f"the evidence {peer.service}'s quote was verified with expired at "
                f"{peer.evidence_expires:%Y-%m-%dT%H:%M:%SZ}; its quote must be verified again",
            )
        manifest = self._manifests.current(now)
        if manifest.version != peer.manifest_version:
            manifest.expect(peer.service, peer.identity, peer.platform)

    def verify(self, certificate: bytes, services: Sequence[str]) -> PeerIdentity:
        """The peer behind ``certificate`` if it is one of ``services``; raises otherwise."""
        now = self._clock()
        manifest = self._manifests.current(now)
        if not services:
            raise IdentityNotAccepted(
                "no service is allowed on this edge (the inbound list is empty)"
            )
        edge = _Edge(manifest, tuple(services))
        attested = self._attested(certificate, now, edge)
        verified = attested.quote
        apply_policy(
            verified,
            attrs.evolve(self._policy, allow_debug=edge.allow_debug),
        )
        identity: PeerMeasurement = verified.quote.body.identity()
        platform = Platform(verified.fmspc, verified.ppid)
        service = edge.accepted_service(identity, platform)
        # Only now is the claim an accepted enclave's word, fit to supersede our manifest.
        self._manifests.check_peer(service, attested.manifest, now)
        return PeerIdentity(
            service=service,
            identity=identity,
            tcb_status=verified.tcb_status,
            advisory_ids=verified.advisory_ids,
            manifest_version=manifest.version,
            certificate_sha256=attested.sha256,
            certificate_not_after=attested.not_after,
            evidence_expires=verified.evidence_expires,
            platform=platform,
        )


@attrs.frozen
class _Edge:
    """The services a peer may be on one connection, under the manifest in force."""

    manifest: VerifiedManifest
    services: tuple[str, ...]

    @property
    def allow_debug(self) -> bool:
        """Debug enclaves pass only where the manifest accepts one for an expected service;
        the manifest match then demands the exact debug flag."""
        return any(
            entry.debug
            for service in self.services
            for entry in self.manifest.manifest.enclaves.get(service, ())
        )

    def refuse_unacceptable(self, quote: Quote, platform: Platform) -> None:
        """Refuse a quote that could never be accepted here, whatever its verification
        would say: from a debug enclave where none is accepted, or of an enclave that
        matches no entry of the expected services."""
        body = quote.body
        if body.debug and not self.allow_debug:
            raise PolicyRejected(
                "debug",
                f"the {quote.tee} report is from a debug enclave, and no manifest entry of "
                f"{self._expected} accepts one",
                quote,
            )
        self.accepted_service(body.identity(), platform)

    @property
    def _expected(self) -> str:
        return ", ".join(repr(service) for service in self.services)

    def accepted_service(self, identity: PeerMeasurement, platform: Platform) -> str:
        """The first expected service whose manifest entries accept ``identity``;
        ``IdentityNotAccepted`` naming the identity and every mismatch otherwise."""
        refusals: list[IdentityNotAccepted] = []
        for service in self.services:
            try:
                self.manifest.expect(service, identity, platform)
            except IdentityNotAccepted as exc:
                refusals.append(exc)
                continue
            return service
        many = len(self.services) > 1
        prefix = (
            f"peer {identity.measurement_text} is not accepted for "
            f"service{'s' if many else ''} {self._expected} by manifest v{self.manifest.version}"
        )
        known = self.manifest.services_of(identity, platform)
        if known:
            raise IdentityNotAccepted(
                f"{prefix}: it is the manifest's {', '.join(map(repr, known))}, which is not allowed on this edge"
            )
        if not many:
            raise refusals[0]
        reasons = "; ".join(
            f"{service}: {refusal.why}"
            for service, refusal in zip(self.services, refusals, strict=True)
        )
        raise IdentityNotAccepted(f"{prefix}: it matches no entry of any of them ({reasons})")
