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
def _touched(certificate: x509.Certificate) -> x509.Certificate:
    """``certificate`` with every field touched, or the equal certificate touched before:
    the same root and CA certificates arrive in several chains. Certificates are equal when
    their parsed DER is (cryptography's equality, which also keys ``pki.signed_by``), so
    the one returned reads the same in every field. A failure raises and is not kept."""
    _touch_certificate(certificate)
    return certificate


@functools.lru_cache(maxsize=256)
def _parse_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    # Parsing is a pure function of the bytes; a failure raises and is never remembered.
    return tuple(map(_touched, x509.load_pem_x509_certificates(pem)))


def load_pem_chain(pem: bytes, field: str, error: type[InputError]) -> list[x509.Certificate]:
    try:
        return list(_parse_chain(pem))
    except _MALFORMED as exc:
        raise error(field, f"not a well-formed PEM certificate chain ({exc})") from exc


@functools.lru_cache(maxsize=64)
def parsed_crl(der: bytes) -> x509.CertificateRevocationList:
    """The CRL in ``der``, parsed once per distinct bytes (CRL objects are not hashable, so
    what works on a CRL is remembered by its DER). A failure raises and is not kept."""
    return x509.load_der_x509_crl(der)


@functools.lru_cache(maxsize=64)
def crl_issuer(der: bytes) -> x509.Name:
    """The issuer of the CRL ``der``: cryptography builds a CRL's issuer Name afresh at every
    access, and it is needed twice, touched at load and compared in ``pki.crl_signed_by``.
    A failure raises and is not kept."""
    return parsed_crl(der).issuer


def load_der_crl(der: bytes, field: str, error: type[InputError]) -> x509.CertificateRevocationList:
    try:
        crl = parsed_crl(der)
        _ = (
            crl_issuer(der),
            crl.last_update_utc,
            crl.next_update_utc,
            crl.signature_hash_algorithm,
        )
        for extension in crl.extensions:
            _ = extension.value
        for revoked in crl:
            _ = (revoked.serial_number, revoked.revocation_date_utc)
    except _MALFORMED as exc:
        raise error(field, f"not a well-formed DER CRL ({exc})") from exc
    return crl


def clear_cache() -> None:
    _parse_chain.cache_clear()
    _touched.cache_clear()
    parsed_crl.cache_clear()
    crl_issuer.cache_clear()
