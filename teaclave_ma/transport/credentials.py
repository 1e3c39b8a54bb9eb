"""Our own RA-TLS credentials: a fresh in-memory P-256 key and a short-lived certificate
carrying a quote that binds it, rotated before it expires.

Rotation never touches open connections: a TLS context captures the certificate it was
built with, and new connections simply use the newest one. The certificate claims the
manifest in force, so a reload that changes it issues a new certificate at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from teaclave_ma.attestation.attester import Attester
from teaclave_ma.errors import ConfigError
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import AcceptedVersion

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
ManifestInForce = Callable[[], AcceptedVersion]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.frozen(repr=False)
class TlsCredentials:
    """Our private key and the certificate we present with it (for RA-TLS, one that
    carries a quote binding the key)."""

    # Ed25519: a kms owner's own key, outside any enclave (teaclave_ma.secrets.owner).
    private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    certificate: x509.Certificate

    def __repr__(self) -> str:
        return f"TlsCredentials(not_after={self.not_after.isoformat()})"

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc


class CredentialSource(Protocol):
    def current(self) -> TlsCredentials: ...


@attrs.frozen
class FixedCredentials:
    """One key and certificate, presented unchanged on every connection (an ordinary
    CA-issued certificate, or a crafted one in tests); nothing rotates them."""

    credentials: TlsCredentials

    def current(self) -> TlsCredentials:
        return self.credentials


class RotatingCredentials:
    """Issues a new key and certificate once the current one is within ``refresh_before``
    of expiry, or once ``manifest()`` (the manifest in force) differs from the one it
    claims; cheap to call on every connection."""

    def __init__(
        self,
        attester: Attester,
        common_name: str,
        *,
        manifest: ManifestInForce,
        lifetime: dt.timedelta = dt.timedelta(hours=1),
        refresh_before: dt.timedelta = dt.timedelta(minutes=10),
        clock: Clock = utc_now,
    ) -> None:
        if not dt.timedelta(0) < refresh_before < lifetime:
            raise ConfigError(
                "refresh_before",
                f"must be positive and shorter than the lifetime {lifetime}, got {refresh_before}",
            )
        self._attester = attester
        self._common_name = common_name
        self._manifest = manifest
        self._lifetime = lifetime
        self._refresh_before = refresh_before
        self._clock = clock
        self._lock = threading.Lock()
        self._current: TlsCredentials | None = None
        self._claimed: AcceptedVersion | None = None
        self.generation = 0

    def current(self) -> TlsCredentials:
        with self._lock:
            now = self._clock()
            manifest = self._manifest()
            if (
                self._current is None
                or self._current.not_after - now <= self._refresh_before
                or manifest != self._claimed
            ):
                self._current = self._issue(now, manifest)
                self._claimed = manifest
            return self._current

    def _issue(self, now: dt.datetime, manifest: AcceptedVersion) -> TlsCredentials:
        key = ec.generate_private_key(ec.SECP256R1())
        der = create_ratls_certificate(
            key,
            self._attester.quote,
            common_name=self._common_name,
            now=now,
            lifetime=self._lifetime,
            manifest=manifest,
        )
        self.generation += 1
        log.info(
            "issued RA-TLS certificate #%d for %s, valid %s, claiming manifest v%d",
            self.generation,
            self._common_name,
            self._lifetime,
            manifest.version,
        )
        return TlsCredentials(key, x509.load_der_x509_certificate(der))
