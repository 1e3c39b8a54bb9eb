"""The verification every service runs on a manifest before it serves.

``ManifestTrust`` owns the trust state in the manner of python-tuf's TrustedMetadataSet:
untrusted bytes go in, verified objects come out, and nothing here touches the disk or the
clock (the caller passes ``now``). Order matters: signatures are checked over the raw bytes
first, and the YAML is parsed only once enough trusted auditors have vouched for those bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence

import attrs

from teaclave_ma.errors import InputError, VerificationError
from teaclave_ma.formats.manifest import MAX_MANIFEST_BYTES, Accepted, Manifest, parse_manifest
from teaclave_ma.formats.signature import parse_signature
from teaclave_ma.formats.strict import join
from teaclave_ma.formats.trust import TrustFile
from teaclave_ma.identity import PeerMeasurement, Platform

log = logging.getLogger(__name__)


@attrs.frozen
class Reason:
    check: str  # stable id: "threshold", "expired", "rollback", "signature", ...
    message: str


class ManifestRejected(VerificationError):
    """The manifest must not be used; ``reasons`` lists every reason found."""

    def __init__(self, reasons: Sequence[Reason]) -> None:
        self.reasons = tuple(reasons)
        self.checks = frozenset(reason.check for reason in self.reasons)
        super().__init__(
            self.reasons[0].check, "; ".join(reason.message for reason in self.reasons)
        )


class IdentityNotAccepted(VerificationError):
    """An attested identity that the manifest does not accept for the service in question."""

    def __init__(self, message: str, why: str | None = None) -> None:
        # ``why``: the mismatch alone (no peer, no manifest), for messages that list several.
        self.why = why or message
        super().__init__("manifest_identity", message)


class ManifestSuperseded(ManifestRejected):
    """An attested peer enforces a newer manifest than the one in force here: this service
    refuses to decide whom to trust under its old one until it has loaded one at least as new."""

    def __init__(self, message: str) -> None:
        super().__init__([Reason("superseded", message)])


class PeerManifestOlder(VerificationError):
    """A peer that enforces an older manifest than the one in force here."""

    def __init__(self, message: str) -> None:
        super().__init__("peer_manifest_older", message)


class PeerManifestDiffers(VerificationError):
    """A peer whose manifest has this service's version but other bytes: a fork of the
    auditors' history, which no service may resolve by picking one."""

    def __init__(self, message: str) -> None:
        super().__init__("peer_manifest_differs", message)


@attrs.frozen
class AcceptedVersion:
    """A manifest's version and the digest of its bytes: the highest a service has
    accepted, or the one a peer's certificate claims it enforces."""

    version: int
    sha256: str


@attrs.frozen
class NewerAtPeer:
    """The newest manifest an attested peer was seen to enforce, and which peer."""

    service: str
    manifest: AcceptedVersion


@attrs.frozen
class VerifiedManifest:
    manifest: Manifest
    sha256: str
    signed_by: tuple[str, ...]  # key ids that counted towards the threshold
    signer_names: tuple[str, ...]
    notes: tuple[str, ...]  # signatures seen but not counted, and why

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def accepted(self) -> AcceptedVersion:
        return AcceptedVersion(self.manifest.version, self.sha256)

    def services_of(self, identity: PeerMeasurement, platform: Platform | None = None) -> list[str]:
        """Every service whose manifest entries accept ``identity`` on ``platform`` (for
        diagnostics)."""
        return sorted(
            name
            for name, entries in self.manifest.enclaves.items()
            if any(entry.mismatch(identity, platform) is None for entry in entries)
        )

    def expect(
        self, service: str, identity: PeerMeasurement, platform: Platform | None = None
    ) -> Accepted:
        """The entry of ``service`` that ``identity``, attested on ``platform``, matches;
        IdentityNotAccepted otherwise. Without a platform, entries that pin one refuse."""
        entries = self.manifest.enclaves.get(service)
        if not entries:
            raise IdentityNotAccepted(
                f"service {service!r} has no entry in manifest v{self.version}", "no entry"
            )
        mismatches = []
        for index, entry in enumerate(entries):
            why = entry.mismatch(identity, platform, join(join("enclaves", service), index))
            if why is None:
                return entry
            mismatches.append(why)
        why = "; ".join(mismatches)
        raise IdentityNotAccepted(
            f"peer {identity.measurement_text} is not accepted for service "
            f"{service!r} by manifest v{self.version} ({why})",
            why,
        )


class ManifestTrust:
    """Verifies manifests against an embedded trust file and remembers the highest accepted."""

    def __init__(self, trust: TrustFile, highest: AcceptedVersion | None = None) -> None:
        self._trust = trust
        self._auditors = trust.by_key_id()
        self.highest = highest
        self.current: VerifiedManifest | None = None
        # Not persisted: after a restart the first newer peer tells it again.
        self.newer_at_peer: NewerAtPeer | None = None

    @property
    def trust(self) -> TrustFile:
        return self._trust

    def check(
        self,
        manifest_bytes: bytes,
        signatures: Iterable[tuple[str, bytes]],
        now: dt.datetime,
    ) -> VerifiedManifest:
        """Verify without changing state. ``signatures`` is ``(source name, file bytes)`` pairs."""
        if len(manifest_bytes) > MAX_MANIFEST_BYTES:
            # Endless data: refused before a single signature is checked over it.
            raise ManifestRejected(
                [
                    Reason(
                        "size",
                        f"manifest of {len(manifest_bytes)} bytes is larger than the limit "
                        f"of {MAX_MANIFEST_BYTES}",
                    )
                ]
            )
        counted, notes = self._count_signatures(manifest_bytes, signatures)
        if len(counted) < self._trust.threshold:
            names = [self._auditors[key].name for key in counted]
            reasons = [
                Reason(
                    "threshold",
                    f"{len(counted)} of the required {self._trust.threshold} trusted auditor "
                    f"signatures (valid: {', '.join(names) or 'none'})",
                )
            ]
            reasons.extend(Reason("signature", note) for note in notes)
            raise ManifestRejected(reasons)
        try:
            manifest = parse_manifest(manifest_bytes)
        except InputError as exc:
            # Signed by enough auditors yet unparsable: still a refusal, never a traceback.
            raise ManifestRejected(
                [Reason("format", f"signed manifest is malformed: {exc}")]
            ) from exc
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        reasons = []
        if manifest.expires <= now:
            reasons.append(
                Reason(
                    "expired",
                    f"manifest v{manifest.version} expired at {manifest.expires:%Y-%m-%dT%H:%M:%SZ}",
                )
            )
        if self.highest is not None:
            if manifest.version < self.highest.version:
                reasons.append(
                    Reason(
                        "rollback",
                        f"manifest v{manifest.version} is older than v{self.highest.version}, "
                        "which this service has already accepted",
                    )
                )
            elif manifest.version == self.highest.version and digest != self.highest.sha256:
                reasons.append(
                    Reason(
                        "rollback",
                        f"manifest v{manifest.version} differs from the v{self.highest.version} "
                        "already accepted; a changed manifest needs a higher version",
                    )
                )
        if reasons:
            raise ManifestRejected(reasons)
        return VerifiedManifest(
            manifest=manifest,
            sha256=digest,
            signed_by=tuple(counted),
            signer_names=tuple(self._auditors[key].name for key in counted),
            notes=tuple(notes),
        )

    def accept(
        self,
        manifest_bytes: bytes,
        signatures: Iterable[tuple[str, bytes]],
        now: dt.datetime,
    ) -> VerifiedManifest:
        """Verify and, only if valid, make it the current manifest."""
        verified = self.check(manifest_bytes, signatures, now)
        self.commit(verified)
        return verified

    def commit(self, verified: VerifiedManifest) -> None:
        """Make an already checked manifest current (split from ``check`` so callers can
        persist the new version first and commit only once that succeeded)."""
        for note in verified.notes:
            log.warning("manifest v%d: %s", verified.version, note)
        self.current = verified
        if self.highest is None or verified.version >= self.highest.version:
            self.highest = verified.accepted

    def loaded(self) -> VerifiedManifest:
        """The manifest last committed, expired or superseded or not; refuses none."""
        if self.current is None:
            raise ManifestRejected([Reason("missing", "no verified manifest is loaded")])
        return self.current

    def require_current(self, now: dt.datetime) -> VerifiedManifest:
        """The manifest in force; refuses a missing one, one that expired while in use, and
        one that an attested peer's newer manifest superseded."""
        current = self.loaded()
        if current.manifest.expires <= now:
            raise ManifestRejected(
                [
                    Reason(
                        "expired",
                        f"manifest v{current.version} expired at "
                        f"{current.manifest.expires:%Y-%m-%dT%H:%M:%SZ} and no newer one was accepted",
                    )
                ]
            )
        self._refuse_if_superseded(current)
        return current

    def _refuse_if_superseded(self, current: VerifiedManifest) -> None:
        newer = self.newer_at_peer
        if newer is not None and current.version < newer.manifest.version:
            raise ManifestSuperseded(
                f"manifest v{newer.manifest.version} is in force at {newer.service}; "
                f"this service has v{current.version}: reload"
            )

    def check_peer(self, service: str, claimed: AcceptedVersion, now: dt.datetime) -> None:
        """Compare the manifest an attested, accepted peer of ``service`` claims to enforce
        with the one in force here: refuse an older or a different one; a newer one
        supersedes ours (``ManifestSuperseded``, now and on every use until a reload)."""
        current = self.require_current(now)
        if claimed.version < current.version:
            raise PeerManifestOlder(
                f"{service} runs manifest v{claimed.version}, older than v{current.version} "
                f"in force here: {service} must reload v{current.version} or newer"
            )
        if claimed.version == current.version and claimed.sha256 != current.sha256:
            raise PeerManifestDiffers(
                f"{service} runs a manifest v{claimed.version} with sha256 "
                f"{claimed.sha256[:16]}..., but this service's v{current.version} has "
                f"{current.sha256[:16]}...: the auditors signed two different v{current.version}"
            )
        if claimed.version > current.version:
            newer = self.newer_at_peer
            if newer is None or claimed.version > newer.manifest.version:
                self.newer_at_peer = NewerAtPeer(service, claimed)
                log.warning(
                    "%s enforces manifest v%d, newer than v%d in force here: refusing every "
                    "connection until v%d or newer is loaded (reload)",
                    service,
                    claimed.version,
                    current.version,
                    claimed.version,
                )
            self._refuse_if_superseded(current)

    def _count_signatures(
        self, manifest_bytes: bytes, signatures: Iterable[tuple[str, bytes]]
    ) -> tuple[list[str], list[str]]:
        counted: list[str] = []
        notes: list[str] = []
        for source, data in signatures:
            try:
                signature = parse_signature(data, source)
            except InputError as exc:
                notes.append(f"unreadable signature ignored: {exc}")
                continue
            auditor = self._auditors.get(signature.key_id)
            if auditor is None:
                notes.append(
                    f"{source}: key {signature.key_id[:16]}... is not a trusted auditor; ignored"
                )
            elif signature.key_id in counted:
                # Checked before the signature: another copy can add nothing, so it costs
                # no verification (a directory of copies is no work multiplier).
                notes.append(f"{source}: auditor {auditor.name!r} already counted; counted once")
            elif not auditor.public_key.verify(manifest_bytes, signature.signature):
                notes.append(
                    f"{source}: signature by auditor {auditor.name!r} does not verify over these manifest bytes"
                )
            else:
                counted.append(signature.key_id)
        return counted, notes
