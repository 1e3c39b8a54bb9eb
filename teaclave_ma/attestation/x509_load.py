"""Loading X.509 certificates and CRLs completely, up front.

pyca/cryptography parses many fields lazily, so a malformed issuer or extension would
otherwise surface as a ValueError deep inside a check. Touching every field we rely on
at load time turns any such defect into one typed error naming where the input came from.
"""

from __future__ import annotations

import functools

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from teaclave_ma.errors import InputError

# What cryptography raises, lazily, for the different ways a certificate can be malformed.
_MALFORMED = (
    ValueError,
    TypeError,  # e.g. a Name attribute whose value type does not fit its OID
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)


def _touch_certificate(certificate: x509.Certificate) -> None:
    _ = (certificate.subject, certificate.issuer, certificate.serial_number)
    _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    _ = (certificate.signature_hash_algorithm, certificate.signature_algorithm_oid)
    certificate.public_key()
    for extension in certificate.extensions:
        _ = extension.value


@functools.lru_cache(maxsize=256)
def _parse_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    # Parsing is a pure function of the bytes; a failure raises and is never remembered.
    certificates = tuple(x509.load_pem_x509_certificates(pem))
    for certificate in certificates:
        _touch_certificate(certificate)
    return certificates


def load_pem_chain(pem: bytes, field: str, error: type[InputError]) -> list[x509.Certificate]:
    try:
        return list(_parse_chain(pem))
    except _MALFORMED as exc:
        raise error(field, f"not a well-formed PEM certificate chain ({exc})") from exc


def load_der_crl(der: bytes, field: str, error: type[InputError]) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_hash_algorithm)
        for extension in crl.extensions:
            _ = extension.value
        for revoked in crl:
            _ = (revoked.serial_number, revoked.revocation_date_utc)
    except _MALFORMED as exc:
        raise error(field, f"not a well-formed DER CRL ({exc})") from exc
    return crl


def clear_cache() -> None:
    _parse_chain.cache_clear()
