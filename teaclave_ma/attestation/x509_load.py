"""Loading X.509 certificates and CRLs completely, up front.

pyca/cryptography parses many fields lazily, so a malformed issuer or extension would
otherwise surface as a ValueError deep inside a check. Touching every field we rely on
at load time turns any such defect into one typed error naming where the input came from.

What the chain checks compare and verify (the signed TBS bytes, the signature, issuer and
subject names as DER) is read in one strict pass of the project's DER reader
(``CertificateFacts``, ``CrlFacts``): cryptography's Name objects cost more than the rest
of loading, and names are compared as bytes anyway.
"""

from __future__ import annotations

import functools

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from teaclave_ma.errors import InputError
from teaclave_ma.formats import der
from teaclave_ma.formats.der import DerError, Span

# What cryptography raises, lazily, for the different ways a certificate can be malformed.
_MALFORMED = (
    ValueError,
    TypeError,  # e.g. a Name attribute whose value type does not fit its OID
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
    DerError,
)

# ecdsa-with-SHA256 (RFC 5758), as the contents of its OID: the one signature algorithm of
# the DCAP PKI, and the only one these checks accept.
ECDSA_WITH_SHA256 = der.encode_oid("1.2.840.10045.4.3.2")[2:]
_COMMON_NAME = der.encode_oid("2.5.4.3")[2:]
_TAG_SET = 0x31
_TAG_EXPLICIT_VERSION = 0xA0
# The directory string types X.520 names use, and how their bytes decode.
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString (its smaller alphabet is checked below)
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # TeletexString, as cryptography reads it
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}
_PRINTABLE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)


@attrs.frozen
class NameFacts:
    """An X.501 Name as its DER and, decoded, its attributes in order."""

    encoded: bytes
    attributes: tuple[tuple[str, str], ...]  # (dotted OID, value)
    common_name: str | None  # the first CN

    def describe(self) -> str:
        """The CN, or every attribute: for messages (never for decisions)."""
        if self.common_name is not None:
            return self.common_name
        return ",".join(f"{oid}={value}" for oid, value in self.attributes) or "(empty name)"


@attrs.frozen
class SignedFacts:
    """What a signature check needs of a certificate or CRL, read from its DER."""

    encoded: bytes  # the whole DER
    tbs: bytes  # the signed bytes (TBSCertificate, TBSCertList)
    signature_algorithm: bytes  # OID contents
    signature: bytes  # the DER ECDSA-Sig-Value from the BIT STRING
    issuer: NameFacts


@attrs.frozen
class CertificateFacts:
    signed: SignedFacts
    subject: NameFacts


def _name(data: bytes, span: Span, what: str) -> NameFacts:
    tag, offset, _, end = span
    der.check_tag(tag, der.TAG_SEQUENCE, offset, what)
    try:
        return _read_name(data[offset:end])
    except DerError as exc:
        raise DerError(what, f"{exc.problem} (within the name at offset {offset})") from exc


@functools.lru_cache(maxsize=64)
def _oid_text(contents: bytes) -> str:
    """A name attribute's OID, checked and dotted: the same few (C, O, CN...) recur in
    every name."""
    return der.decode_oid(contents, "name")


@functools.lru_cache(maxsize=256)
def _read_name(data: bytes) -> NameFacts:
    """The Name whose DER is ``data`` (offsets in errors are within it). Remembered by its
    bytes: a CA's name is every child's issuer. A failure raises and is not kept."""
    what = "name"
    _, _, pos, end = der.single_span(data, what)
    attributes: list[tuple[str, str]] = []
    common_name: str | None = None
    while pos < end:  # SET OF AttributeTypeAndValue, one element at a time
        tag, set_pos, set_end = der.tlv_at(data, pos, end, what)
        der.check_tag(tag, _TAG_SET, pos, what)
        if set_pos == set_end:
            raise DerError(what, f"empty relative distinguished name at offset {pos}")
        while set_pos < set_end:
            tag, oid_pos, pair_end = der.tlv_at(data, set_pos, set_end, what)
            der.check_tag(tag, der.TAG_SEQUENCE, set_pos, what)
            tag, oid_start, oid_end = der.tlv_at(data, oid_pos, pair_end, what)
            der.check_tag(tag, der.TAG_OID, oid_pos, what)
            value_tag, value_start, value_end = der.tlv_at(data, oid_end, pair_end, what)
            if value_end != pair_end:
                raise DerError(what, f"expected (OID, value) at offset {set_pos}")
            codec = _STRING_CODECS.get(value_tag)
            if codec is None:
                raise DerError(
                    what, f"attribute value of tag 0x{value_tag:02x} at offset {oid_end}"
                )
            raw = data[value_start:value_end]
            if value_tag == 0x13 and not _PRINTABLE.issuperset(raw):
                raise DerError(what, f"PrintableString with other characters at offset {oid_end}")
            try:
                value = raw.decode(codec)
            except UnicodeDecodeError as exc:
                raise DerError(what, f"undecodable string at offset {oid_end} ({exc})") from exc
            oid_bytes = data[oid_start:oid_end]
            attributes.append((_oid_text(oid_bytes), value))
            if common_name is None and oid_bytes == _COMMON_NAME:
                common_name = value
            set_pos = pair_end
        pos = set_end
    return NameFacts(data, tuple(attributes), common_name)


def _signed(data: bytes, what: str) -> tuple[SignedFacts, list[Span]]:
    """The outer SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING } and the TBS's fields;
    the TBS's own algorithm must be the outer one (RFC 5280 4.1.1.2, 5.1.1.2)."""
    _, _, start, end = der.single_span(data, what)
    parts = der.spans(data, start, end, what)
    if len(parts) != 3:
        raise DerError(what, f"expected (TBS, algorithm, signature), got {len(parts)} elements")
    (tbs_tag, tbs_offset, tbs_start, tbs_end), algorithm, bits = parts
    der.check_tag(tbs_tag, der.TAG_SEQUENCE, tbs_offset, what)
    oid = _algorithm(data, algorithm, what)
    der.check_tag(bits[0], der.TAG_BIT_STRING, bits[1], what)
    if bits[3] == bits[2] or data[bits[2]] != 0:
        raise DerError(what, f"signature BIT STRING with unused bits at offset {bits[1]}")
    fields = der.spans(data, tbs_start, tbs_end, what)
    # Certificates lead with an explicit [0] version, CRLs with an INTEGER one (both optional).
    first = 1 if fields and fields[0][0] in (_TAG_EXPLICIT_VERSION, der.TAG_INTEGER) else 0
    if what == "certificate":
        first += 1  # the serial number
    if len(fields) < first + 2:
        raise DerError(what, "TBS too short")
    if (
        _algorithm(data, fields[first], what) != oid
        or data[fields[first][1] : fields[first][3]] != data[algorithm[1] : algorithm[3]]
    ):
        raise DerError(what, "the TBS signature algorithm differs from the outer one")
    signed = SignedFacts(
        encoded=data,
        tbs=data[tbs_offset:tbs_end],
        signature_algorithm=oid,
        signature=data[bits[2] + 1 : bits[3]],
        issuer=_name(data, fields[first + 1], f"{what} issuer"),
    )
    return signed, fields[first + 2 :]


def _algorithm(data: bytes, span: Span, what: str) -> bytes:
    tag, offset, start, end = span
    der.check_tag(tag, der.TAG_SEQUENCE, offset, what)
    items = der.spans(data, start, end, what)
    if not items or len(items) > 2:
        raise DerError(what, f"malformed AlgorithmIdentifier at offset {offset}")
    der.check_tag(items[0][0], der.TAG_OID, items[0][1], what)
    return data[items[0][2] : items[0][3]]


def read_certificate_facts(data: bytes) -> CertificateFacts:
    """A certificate's signed parts and names from its DER; ``DerError`` when malformed."""
    signed, rest = _signed(data, "certificate")
    if len(rest) < 3:  # validity, subject, subjectPublicKeyInfo
        raise DerError("certificate", "TBS certificate too short")
    return CertificateFacts(signed, _name(data, rest[1], "certificate subject"))


def read_crl_facts(data: bytes) -> SignedFacts:
    """A CRL's signed parts and issuer from its DER; ``DerError`` when malformed."""
    return _signed(data, "CRL")[0]


@functools.lru_cache(maxsize=256)
def certificate_facts(certificate: x509.Certificate) -> CertificateFacts:
    """The facts of a loaded certificate (touched at load, so this does not raise for one
    loaded here); remembered like ``_touched``."""
    return read_certificate_facts(certificate.public_bytes(serialization.Encoding.DER))


def _touch_certificate(certificate: x509.Certificate) -> None:
    certificate_facts(certificate)  # the names, strictly, instead of cryptography's Names
    _ = certificate.serial_number
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
def parsed_crl(data: bytes) -> x509.CertificateRevocationList:
    """The CRL in ``data``, parsed once per distinct bytes (CRL objects are not hashable, so
    what works on a CRL is remembered by its DER). A failure raises and is not kept."""
    return x509.load_der_x509_crl(data)


@functools.lru_cache(maxsize=64)
def crl_facts(data: bytes) -> SignedFacts:
    """The signed parts and issuer of the CRL ``data``, read once per distinct bytes (instead
    of cryptography's issuer Name, built afresh at every access). A failure is not kept."""
    return read_crl_facts(data)


def load_der_crl(
    data: bytes, field: str, error: type[InputError]
) -> x509.CertificateRevocationList:
    try:
        crl = parsed_crl(data)
        _ = (
            crl_facts(data),
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
    certificate_facts.cache_clear()
    _read_name.cache_clear()
    _oid_text.cache_clear()
    parsed_crl.cache_clear()
    crl_facts.cache_clear()
