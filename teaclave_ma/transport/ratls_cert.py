"""Creating RA-TLS certificates in Gramine's format: a self-signed P-256 certificate whose
quote binds its key, under both the legacy quote extension and the TCG tagged-evidence
extension (see ``evidence`` for the encodings), whose claims name the manifest in force."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    TCG_EVIDENCE_OID,
    TCG_EVIDENCE_TAG,
    tcg_claims,
)
from teaclave_ma.trust.manifest_trust import AcceptedVersion

QuoteFor = Callable[[bytes], bytes]
CLOCK_SKEW = dt.timedelta(minutes=1)


def create_ratls_certificate(
    key: ec.EllipticCurvePrivateKey,
    quote_for: QuoteFor,
    *,
    common_name: str,
    now: dt.datetime,
    lifetime: dt.timedelta,
    manifest: AcceptedVersion | None,
    tcg: bool = True,
) -> bytes:
    """DER of a fresh RA-TLS certificate; ``quote_for(report_data)`` supplies each quote.

    ``manifest``: the manifest in force, claimed in the TCG evidence; teaclave-ma peers
    refuse a certificate without it (None, or ``tcg=False``: a non-teaclave peer's)."""
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    legacy_quote = quote_for(hashlib.sha256(spki).digest() + bytes(32))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(LEGACY_QUOTE_OID), legacy_quote),
            critical=False,
        )
    )
    if tcg:
        claims = tcg_claims(spki, manifest)
        tcg_quote = quote_for(hashlib.sha256(claims).digest() + bytes(32))
        evidence = cbor2.dumps(cbor2.CBORTag(TCG_EVIDENCE_TAG, [tcg_quote, claims]))
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(TCG_EVIDENCE_OID), evidence),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
