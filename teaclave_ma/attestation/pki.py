"""Certificate chains and CRLs of the DCAP PKI, checked at an explicit time.

Chains are short and fixed in shape (leaf, optional intermediate CA, root), so they are
checked directly: each certificate's signature by the next, validity at ``now``, CA flags
on issuers, and the root pinned by the trust anchor.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teaclave_ma.attestation import x509_load
from teaclave_ma.attestation.anchors import SIMULATED_MARKER, TrustAnchor
from teaclave_ma.attestation.errors import QuoteVerificationError


def subject_cn(certificate: x509.Certificate) -> str:
    return x509_load.certificate_facts(certificate).subject.describe()


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable; built once, not per signature


def ecdsa_p256_verify(
    public_key: ec.EllipticCurvePublicKey, raw_signature: bytes, data: bytes
) -> bool:
    """Verify a raw r||s ECDSA-P256-SHA256 signature, the form Intel's structures use."""
    if len(raw_signature) != 64:
        return False
    signature = encode_dss_signature(
        int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
    )
    try:
        public_key.verify(signature, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def p256_key_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from Intel's 64-byte x||y encoding; remembered, as a platform's
    attestation key signs every quote it makes (a point that is not on the curve raises
    and is not kept)."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError as exc:
        raise QuoteVerificationError(
            "attestation_key", f"attestation key is not a P-256 point ({exc})"
        ) from exc


def ec_public_key(certificate: x509.Certificate, check: str) -> ec.EllipticCurvePublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise QuoteVerificationError(
            check, f"{subject_cn(certificate)!r} does not hold a P-256 key"
        )
    return key


# Signature checks are pure functions of the certificates' bytes, so their results (either
# way) are kept: the same Intel chains arrive with every quote and every collateral.
def _signed_by_key(
    signed: x509_load.SignedFacts, issuer: x509.Certificate, issuer_name: x509_load.NameFacts
) -> bool:
    """``signed`` names ``issuer_name`` as its issuer (byte for byte, as RFC 5280 7.1 allows)
    and its TBS bytes verify under ``issuer``'s P-256 key with ECDSA-SHA256, the DCAP PKI's
    only algorithm (any other is refused, not tried)."""
    key = issuer.public_key()
    if (
        signed.issuer.encoded != issuer_name.encoded
        or signed.signature_algorithm != x509_load.ECDSA_WITH_SHA256
        or not isinstance(key, ec.EllipticCurvePublicKey)
        or not isinstance(key.curve, ec.SECP256R1)
    ):
        return False
    try:
        key.verify(signed.signature, signed.tbs, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    issuer_subject = x509_load.certificate_facts(issuer).subject
    return _signed_by_key(x509_load.certificate_facts(child).signed, issuer, issuer_subject)


@functools.lru_cache(maxsize=64)
def der_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER, what anchors pin; the same root arrives in every
    chain. (cryptography re-encodes the parsed certificate, so equal ones hash alike.)"""
    return hashlib.sha256(x509_load.certificate_facts(certificate).signed.encoded).digest()


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_chain(
    chain: Sequence[x509.Certificate], anchor: TrustAnchor, now: dt.datetime, check: str
) -> None:
    """``chain`` is leaf first and ends with the root; the root must be the anchor."""
    if len(chain) < 2:
        raise QuoteVerificationError(
            check, f"certificate chain too short ({len(chain)} certificates)"
        )
    root = chain[-1]
    if der_sha256(root) != anchor.root_sha256:
        if SIMULATED_MARKER in subject_cn(root) and not anchor.simulated:
            raise QuoteVerificationError(
                "simulated_root",
                f"{check}: chains to a simulated root ({subject_cn(root)!r}), not to {anchor.name}; "
                "trusting a simulated platform needs an explicit opt-in",
            )
        # Names alone cannot tell a look-alike from the real root: give both fingerprints.
        raise QuoteVerificationError(
            check,
            f"chains to {subject_cn(root)!r} (SHA-256 {der_sha256(root).hex()}), "
            f"which is not the trusted root {anchor.name!r} (SHA-256 {anchor.root_sha256.hex()})",
        )
    # The root is pinned by the hash of its whole DER, signature included, so checking its
    # self-signature would prove nothing more (RFC 5280 6.1: a trust anchor is not verified).
    for child, issuer in itertools.pairwise(chain):
        if not signed_by(child, issuer):
            raise QuoteVerificationError(
                check, f"{subject_cn(child)!r} is not signed by {subject_cn(issuer)!r}"
            )
        if not _is_ca(issuer):
            raise QuoteVerificationError(check, f"{subject_cn(issuer)!r} is not a CA certificate")
    for certificate in chain:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise QuoteVerificationError(
                f"{check}_validity",
                f"{subject_cn(certificate)!r} is not valid at {now:%Y-%m-%dT%H:%M:%SZ} "
                f"(valid {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} .. "
                f"{certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})",
            )


def chain_window(chain: Sequence[x509.Certificate]) -> tuple[dt.datetime, dt.datetime]:
    """The period in which every certificate of ``chain`` is valid (empty if start > end)."""
    return (
        max(certificate.not_valid_before_utc for certificate in chain),
        min(certificate.not_valid_after_utc for certificate in chain),
    )


@functools.lru_cache(maxsize=1024)
def signed_by_certificate(certificate: x509.Certificate, raw_signature: bytes, data: bytes) -> bool:
    """``ecdsa_p256_verify`` under a certificate's key, remembered by the bytes involved."""
    key = certificate.public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and ecdsa_p256_verify(
        key, raw_signature, data
    )


@functools.lru_cache(maxsize=256)
def crl_signed_by(crl_der: bytes, issuer: x509.Certificate) -> bool:
    """Whether the CRL (DER, as CRL objects are not hashable) is issued and signed by
    ``issuer``; remembered by the bytes involved, like ``signed_by``."""
    issuer_subject = x509_load.certificate_facts(issuer).subject
    return _signed_by_key(x509_load.crl_facts(crl_der), issuer, issuer_subject)


def verify_crl(
    crl: x509.CertificateRevocationList,
    crl_der: bytes,
    issuer: x509.Certificate,
    now: dt.datetime,
    check: str,
) -> dt.datetime:
    """``crl`` (loaded from ``crl_der``) is issued and signed by ``issuer``, and current;
    returns its next update, until which it may be relied on."""
    ec_public_key(issuer, check)  # a clear error for an issuer key of another kind
    if not crl_signed_by(crl_der, issuer):
        raise QuoteVerificationError(
            check,
            f"CRL issued by {x509_load.crl_facts(crl_der).issuer.describe()!r} is not signed by {subject_cn(issuer)!r}",
        )
    next_update = crl.next_update_utc
    if next_update is None:  # RFC 5280 allows it; a verifier could never tell it is stale
        raise QuoteVerificationError(
            f"{check}_validity", f"CRL of {subject_cn(issuer)!r} has no next update"
        )
    if not crl.last_update_utc <= now <= next_update:
        raise QuoteVerificationError(
            f"{check}_validity",
            f"CRL of {subject_cn(issuer)!r} is not current at {now:%Y-%m-%dT%H:%M:%SZ} "
            f"(this update {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}, "
            f"next update {next_update:%Y-%m-%dT%H:%M:%SZ})",
        )
    return next_update


def ensure_not_revoked(
    certificate: x509.Certificate, crl: x509.CertificateRevocationList, check: str
) -> None:
    if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
        raise QuoteVerificationError(
            check, f"{subject_cn(certificate)!r} (serial {certificate.serial_number:x}) is revoked"
        )
