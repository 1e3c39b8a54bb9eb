"""Verification of a peer's RA-TLS certificate, end to end.

In order: a manifest is in force (and not expired: no freeze), the certificate is within
its validity, it carries a quote whose report_data binds the certificate's key, the quote
verifies under the trusted root with current collateral and the TCB policy, and the
attested identity matches a manifest entry of one of the services expected on this edge.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.policy import TCB_STATUSES, VerificationPolicy
from teaclave_ma.attestation.quote import Quote, parse_quote
from teaclave_ma.attestation.verifier import VerifiedQuote, apply_policy, verify_quote
from teaclave_ma.identity import PeerMeasurement
from teaclave_ma.transport.credentials import Clock, utc_now
from teaclave_ma.transport.evidence import (
    CertificateEvidence,
    bound_quote,
    check_validity,
    extract_evidence,
)
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted, VerifiedManifest

log = logging.getLogger(__name__)

CollateralFor = Callable[[Quote], Collateral]


class ManifestSource(Protocol):
    def current(self, now: dt.datetime | None = None) -> VerifiedManifest: ...


@attrs.frozen
class PeerIdentity:
    """Who is on the other end, as attested and as accepted by the manifest."""

    service: str
    identity: PeerMeasurement
    tcb_status: str
    advisory_ids: tuple[str, ...]
    manifest_version: int
    certificate_sha256: bytes

    def describe(self) -> str:
        return f"{self.service} ({self.identity.measurement_text[:28]}..., tcb {self.tcb_status})"


# Verification proper, before any relying party's policy (Revoked is refused regardless).
EVERY_POLICY = VerificationPolicy(allowed_tcb_statuses=TCB_STATUSES - {"Revoked"}, allow_debug=True)


class VerifiedCertificates:
    """A bounded cache of verified peer certificates by SHA-256, each until it expires."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: collections.OrderedDict[bytes, tuple[VerifiedQuote, dt.datetime]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: bytes, now: dt.datetime) -> VerifiedQuote | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry[1]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: bytes, verified: VerifiedQuote, valid_until: dt.datetime) -> None:
        with self._lock:
            self._entries[key] = (verified, valid_until)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class PeerVerifier:
    def __init__(
        self,
        manifests: ManifestSource,
        anchor: TrustAnchor,
        collateral_for: CollateralFor,
        allowed_tcb_statuses: Sequence[str] = ("UpToDate",),
        *,
        clock: Clock = utc_now,
        cache_size: int = 1024,
    ) -> None:
        self._manifests = manifests
        self._anchor = anchor
        self._collateral_for = collateral_for
        self._allowed = frozenset(allowed_tcb_statuses)
        self._clock = clock
        self._cache = VerifiedCertificates(cache_size)

    def _attested(self, evidence: CertificateEvidence, now: dt.datetime) -> VerifiedQuote:
        """The verified quote of a certificate: from the cache, or verified now and cached.

        Only the DCAP verification is cached, never a failure, and only until the
        certificate or its collateral expires; the TCB policy and the manifest are applied
        on every use, so a changed manifest takes effect at once."""
        cached = self._cache.get(evidence.sha256, now)
        if cached is not None:
            return cached
        quote = parse_quote(bound_quote(evidence))
        verified = verify_quote(quote, self._collateral_for(quote), now, EVERY_POLICY, self._anchor)
        self._cache.put(
            evidence.sha256, verified, min(evidence.not_after, verified.collateral_expires)
        )
        return verified

    def recheck(self, peer: PeerIdentity) -> None:
        """Before each request on an open connection: is the peer still accepted by the
        manifest in force now? A newer manifest may have dropped it, or the one in force
        may have expired; either ends the connection."""
        manifest = self._manifests.current(self._clock())
        if manifest.version != peer.manifest_version:
            manifest.expect(peer.service, peer.identity)

    def verify(self, certificate: bytes, services: Sequence[str]) -> PeerIdentity:
        """The peer behind ``certificate`` if it is one of ``services``; raises otherwise."""
        now = self._clock()
        manifest = self._manifests.current(now)
        if not services:
            raise IdentityNotAccepted(
                "no service is allowed on this edge (the inbound list is empty)"
            )
        evidence = extract_evidence(certificate)
        check_validity(evidence, now)
        verified = self._attested(evidence, now)
        # Debug enclaves pass only where the manifest accepts one for an expected service;
        # the manifest match below then demands the exact debug flag.
        allow_debug = any(
            entry.debug
            for service in services
            for entry in manifest.manifest.enclaves.get(service, ())
        )
        apply_policy(
            verified,
            VerificationPolicy(allowed_tcb_statuses=self._allowed, allow_debug=allow_debug),
        )
        body = verified.quote.body
        identity: PeerMeasurement = body.identity()
        refusals = []
        for service in services:
            try:
                manifest.expect(service, identity)
            except IdentityNotAccepted as exc:
                refusals.append(exc)
                continue
            return PeerIdentity(
                service=service,
                identity=identity,
                tcb_status=verified.tcb_status,
                advisory_ids=verified.advisory_ids,
                manifest_version=manifest.version,
                certificate_sha256=evidence.sha256,
            )
        expected = ", ".join(repr(service) for service in services)
        prefix = (
            f"peer {identity.measurement_text} is not accepted for "
            f"service{'s' if len(services) > 1 else ''} {expected} by manifest v{manifest.version}"
        )
        known = manifest.services_of(identity)
        if known:
            raise IdentityNotAccepted(
                f"{prefix}: it is the manifest's {', '.join(map(repr, known))}, which is not allowed on this edge"
            )
        if len(refusals) == 1:
            raise refusals[0]
        raise IdentityNotAccepted(f"{prefix}: it matches no entry of any of them")
