"""Reading the evidence out of an RA-TLS certificate and checking that it binds the key.

Two evidence extensions exist (see ../shared/data/README.md for the facts):
- Gramine's legacy quote extension, OID 1.2.840.113741.1337.6, whose value is the raw quote
  and whose report_data is SHA-256(SubjectPublicKeyInfo DER) followed by 32 zero bytes.
  Gramine writes the OID's DER bytes as the OID value, so real certificates hold the OID
  0.6.9.42.840.113741.1337.6; both spellings are accepted.
- The TCG tagged-evidence extension, OID 2.23.133.5.4.9: CBOR tag 60000 over
  [bstr quote, bstr claims], claims = {"pubkey-hash": bstr(CBOR [1, SHA-256(SPKI)])}
  (SHA-384, 7, and SHA-512, 8, are accepted too; teaclave-ma writes SHA-256),
  report_data = SHA-256(claims) followed by 32 zero bytes. teaclave-ma services add the
  manifest in force to the claims, {"teaclave-ma/manifest": [version, SHA-256 of its bytes]},
  so a peer learns which manifest the other side enforces from evidence its quote binds.

The certificate is parsed with the project's DER reader, because pyca/cryptography refuses
certificates with NULL signature parameters, which Gramine's (mbedTLS) certificates carry.
Where cryptography does load a certificate, both readings must agree on what was signed and
on the key, so that the key the quote binds is the key the TLS stack sees. The reading is
strict: sizes are bounded before anything is decoded, unknown critical extensions are
refused (RFC 5280, 4.2), and the TCG evidence must be CBOR with one meaning only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import io
import re
from typing import Any

import attrs
import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from teaclave_ma.attestation.errors import QuoteFormatError
from teaclave_ma.attestation.quote import Quote, parse_quote
from teaclave_ma.formats import der
from teaclave_ma.formats.der import DerError, Span
from teaclave_ma.transport.errors import CertificateFormatError, EvidenceError
from teaclave_ma.trust.manifest_trust import AcceptedVersion

LEGACY_QUOTE_OID = "1.2.840.113741.1337.6"
LEGACY_QUOTE_OID_GRAMINE = "0.6.9.42.840.113741.1337.6"
TCG_EVIDENCE_OID = "2.23.133.5.4.9"
TCG_EVIDENCE_TAG = 60000
PUBKEY_HASH_CLAIM = "pubkey-hash"
MANIFEST_CLAIM = "teaclave-ma/manifest"
HASH_ALG_SHA256 = 1
# The pubkey-hash algorithms the CCC format asks verifiers to accept, by their number in
# IANA's Named Information Hash Algorithm registry (the truncated SHA-256 forms are not).
PUBKEY_HASHES = {HASH_ALG_SHA256: "sha256", 7: "sha384", 8: "sha512"}
# Real RA-TLS certificates hold about 10 KiB (two quotes of ~5 KiB); the limits leave ample
# room while bounding the work an unauthenticated peer can cause before any check.
MAX_CERTIFICATE = 64 * 1024
MAX_EXTENSION = 32 * 1024
MAX_TCG_CLAIMS = 1024
_CBOR_MAX_DEPTH = 4
# Critical extensions this reader understands: basicConstraints (irrelevant to a self-signed
# leaf trusted through its quote) and the evidence extensions it processes itself.
BASIC_CONSTRAINTS_OID = "2.5.29.19"
UNDERSTOOD_CRITICAL = frozenset(
    {BASIC_CONSTRAINTS_OID, LEGACY_QUOTE_OID, LEGACY_QUOTE_OID_GRAMINE, TCG_EVIDENCE_OID}
)
_TAG_BOOLEAN = 0x01
_TAG_EXTENSIONS = 0xA3
# After subjectPublicKeyInfo: issuerUniqueID [1], subjectUniqueID [2], extensions [3].
_OPTIONAL_TBS_TAGS = (0x81, 0x82, _TAG_EXTENSIONS)
_SIGNATURE_HASHES = {"1.2.840.10045.4.3.2": hashes.SHA256(), "1.2.840.10045.4.3.3": hashes.SHA384()}


@attrs.frozen
class CertificateEvidence:
    der: bytes
    sha256: bytes
    spki_der: bytes
    public_key: PublicKeyTypes
    not_before: dt.datetime
    not_after: dt.datetime
    extension_oids: tuple[str, ...]
    legacy_quote: bytes | None
    legacy_oid: str | None
    tcg_quote: bytes | None
    tcg_claims: bytes | None


class MissingClaim(EvidenceError):
    """A certificate whose bound claims lack one that every teaclave-ma service sends."""

    def __init__(self, claim: str, why: str) -> None:
        self.claim = claim
        super().__init__("missing_claim", f"certificate carries no {claim!r} claim ({why})")


def _oversized(check: str, what: str, size: int, limit: int) -> EvidenceError:
    return EvidenceError(check, f"{what} holds {size} bytes (limit {limit})")


def _to_der(certificate: bytes) -> bytes:
    # PEM is base64 (4/3 of the DER) plus line breaks: twice the DER limit bounds it.
    if len(certificate) > 2 * MAX_CERTIFICATE:
        raise _oversized("oversized_certificate", "certificate", len(certificate), MAX_CERTIFICATE)
    data = certificate
    if certificate.lstrip().startswith(b"-----BEGIN"):
        try:
            data = _pem_to_der(certificate)
        except ValueError as exc:
            raise CertificateFormatError("certificate", f"bad PEM ({exc})") from exc
    if len(data) > MAX_CERTIFICATE:
        raise _oversized("oversized_certificate", "certificate", len(data), MAX_CERTIFICATE)
    return data


def _pem_to_der(pem: bytes) -> bytes:
    # Decoded by hand: cryptography would parse (and refuse) the certificate inside.
    lines = pem.decode("ascii").strip().splitlines()
    if not lines or lines[0].strip() != "-----BEGIN CERTIFICATE-----":
        raise ValueError("expected one CERTIFICATE block")
    try:
        end = next(i for i, line in enumerate(lines) if line.strip() == "-----END CERTIFICATE-----")
    except StopIteration:
        raise ValueError("no END CERTIFICATE line") from None
    try:
        return base64.b64decode("".join(lines[1:end]), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


# RFC 5280, 4.1.2.5: exactly these digits and a Z; strptime alone accepts shorter fields.
_UTC_TIME = re.compile(rb"[0-9]{12}Z")
_GENERALIZED_TIME = re.compile(rb"[0-9]{14}Z")


def _time(data: bytes, span: Span) -> dt.datetime:
    tag, _, start, end = span
    value = data[start:end]
    text = value.decode("ascii", errors="replace")
    try:
        if tag == 0x17 and _UTC_TIME.fullmatch(value):  # YYMMDDHHMMSSZ
            # RFC 5280's window, 1950-2049 (strptime's %y pivots at 1969).
            year = int(value[:2])
            digits = b"%d" % (year + (1900 if year >= 50 else 2000)) + value[2:12]
        elif tag == 0x18 and _GENERALIZED_TIME.fullmatch(value):  # YYYYMMDDHHMMSSZ
            digits = value[:14]
        elif tag in (0x17, 0x18):
            raise ValueError("not in DER's fixed form")
        else:
            raise CertificateFormatError("validity", f"unexpected time tag 0x{tag:02x}")
        # The digits are checked above; datetime checks the ranges (month 13, Feb 30, ...).
        return dt.datetime(
            int(digits[0:4]), int(digits[4:6]), int(digits[6:8]),
            int(digits[8:10]), int(digits[10:12]), int(digits[12:14]), tzinfo=dt.UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise CertificateFormatError("validity", f"bad time {text!r}") from exc


def _strict_cbor(data: bytes, what: str) -> Any:
    """The one CBOR item filling ``data``: definite lengths, no repeated map keys, shallow.

    cbor2 alone would ignore trailing bytes and keep the last of repeated keys, so two
    readers could see different claims in the same bytes."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=_CBOR_MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    try:
        item: Any = decoder.decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise CertificateFormatError(TCG_EVIDENCE_OID, f"{what}: not strict CBOR ({exc})") from exc
    trailing = len(data) - stream.tell()
    if trailing:
        raise CertificateFormatError(
            TCG_EVIDENCE_OID, f"{what}: {trailing} trailing bytes after the CBOR item"
        )
    return item


def _decode_tcg(value: bytes) -> tuple[bytes, bytes]:
    decoded = _strict_cbor(value, "tagged evidence")
    if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != TCG_EVIDENCE_TAG:
        raise CertificateFormatError(TCG_EVIDENCE_OID, f"expected CBOR tag {TCG_EVIDENCE_TAG}")
    body = decoded.value
    if (
        not isinstance(body, list | tuple)
        or len(body) != 2
        or not all(isinstance(x, bytes) for x in body)
    ):
        raise CertificateFormatError(TCG_EVIDENCE_OID, "expected [bstr evidence, bstr claims]")
    quote, claims = body
    if len(claims) > MAX_TCG_CLAIMS:
        raise _oversized("oversized_extension", "TCG claims", len(claims), MAX_TCG_CLAIMS)
    return quote, claims


def _read_extension(data: bytes, span: Span) -> tuple[str, bytes]:
    """An extension's OID and value, refusing it if it is critical and not understood."""
    tag, offset, start, end = span
    if end - start > MAX_EXTENSION:  # before decoding anything inside it
        raise _oversized(
            "oversized_extension", f"extension at offset {offset}", end - start, MAX_EXTENSION
        )
    der.check_tag(tag, der.TAG_SEQUENCE, offset, "extension")
    elements = der.spans(data, start, end, "extension")
    if len(elements) not in (2, 3):
        raise CertificateFormatError(
            "extension", f"expected 2 or 3 elements at offset {offset}, got {len(elements)}"
        )
    oid = _oid(data, elements[0], "extension")
    critical = False  # DEFAULT FALSE
    if len(elements) == 3:
        flag = _value(data, elements[1], _TAG_BOOLEAN, f"{oid}.critical")
        if flag not in (b"\x00", b"\xff"):
            raise CertificateFormatError(f"{oid}.critical", f"not a DER BOOLEAN ({flag.hex()})")
        critical = flag == b"\xff"
    if critical and oid not in UNDERSTOOD_CRITICAL:
        raise EvidenceError(
            "unknown_critical_extension",
            f"extension {oid} is critical and not understood here; RFC 5280 requires "
            "refusing the certificate",
        )
    return oid, _value(data, elements[-1], der.TAG_OCTET_STRING, oid)


def _value(data: bytes, span: Span, tag: int, what: str) -> bytes:
    der.check_tag(span[0], tag, span[1], what)
    return data[span[2] : span[3]]


def _children(data: bytes, span: Span, tag: int, what: str) -> list[Span]:
    der.check_tag(span[0], tag, span[1], what)
    return der.spans(data, span[2], span[3], what)


# The same few OIDs (extensions, algorithms) recur in every certificate; a bad one raises
# and is not kept.
_decoded_oid = functools.lru_cache(maxsize=64)(der.decode_oid)


def _oid(data: bytes, span: Span, what: str) -> str:
    return _decoded_oid(_value(data, span, der.TAG_OID, what), what)


def _extension_items(data: bytes, after_spki: list[Span]) -> list[Span]:
    """The extensions, given the TBS fields after subjectPublicKeyInfo."""
    order = [
        _OPTIONAL_TBS_TAGS.index(f[0]) if f[0] in _OPTIONAL_TBS_TAGS else -1 for f in after_spki
    ]
    if -1 in order or order != sorted(set(order)):  # unknown, repeated or out of order
        tags = ", ".join(f"0x{f[0]:02x}" for f in after_spki)
        raise CertificateFormatError(
            "tbsCertificate", f"unexpected fields after subjectPublicKeyInfo (tags {tags})"
        )
    blocks = [f for f in after_spki if f[0] == _TAG_EXTENSIONS]
    if not blocks:
        return []
    inner = der.spans(data, blocks[0][2], blocks[0][3], "extensions")
    if len(inner) != 1:
        raise CertificateFormatError("extensions", f"expected one SEQUENCE, got {len(inner)} items")
    items = _children(data, inner[0], der.TAG_SEQUENCE, "extensions")
    if not items:
        raise CertificateFormatError("extensions", "empty (RFC 5280 requires at least one)")
    return items


def _collect(data: bytes, items: list[Span]) -> tuple[dict[str, bytes], str | None]:
    """Extension values by OID (both legacy spellings under one key), and the legacy spelling."""
    found: dict[str, bytes] = {}
    legacy_oid: str | None = None
    for item in items:
        oid, value = _read_extension(data, item)
        key = LEGACY_QUOTE_OID if oid in (LEGACY_QUOTE_OID, LEGACY_QUOTE_OID_GRAMINE) else oid
        if key in found:
            raise EvidenceError("duplicate_extension", f"extension {oid} appears more than once")
        found[key] = value
        if key == LEGACY_QUOTE_OID:
            legacy_oid = oid
    return found, legacy_oid


def extract_evidence(certificate: bytes) -> CertificateEvidence:
    """Parse a certificate (PEM or DER) and collect its evidence extensions."""
    data = _to_der(bytes(certificate))
    try:
        outer = der.single_span(data, "certificate")
        parts = _children(data, outer, der.TAG_SEQUENCE, "certificate")
        if len(parts) != 3:
            raise CertificateFormatError("certificate", f"expected 3 elements, got {len(parts)}")
        tbs, algorithm, signature = parts
        fields = _children(data, tbs, der.TAG_SEQUENCE, "tbsCertificate")
        bit_string = _value(data, signature, der.TAG_BIT_STRING, "signatureValue")
        _expect_v3(data, fields)
        fields = fields[1:]
        if len(fields) < 6:
            raise CertificateFormatError("tbsCertificate", "too few fields")
        if _encoded(data, fields[1]) != _encoded(data, algorithm):  # RFC 5280, 4.1.1.2
            raise CertificateFormatError(
                "tbsCertificate.signature", "differs from the certificate's signatureAlgorithm"
            )
        validity = _children(data, fields[3], der.TAG_SEQUENCE, "validity")
        if len(validity) != 2:
            raise CertificateFormatError("validity", "expected notBefore and notAfter")
        der.check_tag(fields[5][0], der.TAG_SEQUENCE, fields[5][1], "subjectPublicKeyInfo")
        spki_der = _encoded(data, fields[5])
        found, legacy_oid = _collect(data, _extension_items(data, fields[6:]))
        algorithm_oid = _oid(
            data,
            _children(data, algorithm, der.TAG_SEQUENCE, "signatureAlgorithm")[0],
            "signatureAlgorithm",
        )
    except DerError as exc:
        raise CertificateFormatError(exc.field, exc.problem) from exc
    except IndexError as exc:  # an empty SEQUENCE where elements are required
        raise CertificateFormatError("certificate", "truncated structure") from exc
    try:
        public_key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateFormatError(
            "subjectPublicKeyInfo", f"unusable public key ({exc})"
        ) from exc
    signed = _encoded(data, tbs)
    _cross_check(data, signed, public_key, algorithm_oid, bit_string)
    _check_self_signature(public_key, algorithm_oid, signed, bit_string)
    tcg_quote = tcg_claims = None
    if TCG_EVIDENCE_OID in found:
        tcg_quote, tcg_claims = _decode_tcg(found[TCG_EVIDENCE_OID])
    legacy = found.get(LEGACY_QUOTE_OID)
    return CertificateEvidence(
        der=data,
        sha256=hashlib.sha256(data).digest(),
        spki_der=spki_der,
        public_key=public_key,
        not_before=_time(data, validity[0]),
        not_after=_time(data, validity[1]),
        extension_oids=tuple(found),
        legacy_quote=legacy,
        legacy_oid=legacy_oid,
        tcg_quote=tcg_quote,
        tcg_claims=tcg_claims,
    )


def _encoded(data: bytes, span: Span) -> bytes:
    return data[span[1] : span[3]]


_V3 = der.encode_tlv(0xA0, der.encode_int(2))


def _expect_v3(data: bytes, fields: list[Span]) -> None:
    # Only v3 certificates carry extensions (RFC 5280, 4.1.2.1); X.509 libraries disagree on
    # what to make of other versions, so none reaches the parsers that follow.
    if not fields or _encoded(data, fields[0]) != _V3:
        raise CertificateFormatError(
            "tbsCertificate.version", "expected version 3 (the only one with extensions)"
        )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _cross_check(
    data: bytes, tbs: bytes, public_key: PublicKeyTypes, algorithm_oid: str, bit_string: bytes
) -> None:
    """Where pyca/cryptography's X.509 parser also reads the certificate, it must find the
    signed bytes, key and signature the DER walk found: two parsers that disagree about a
    certificate are how a quote comes to bind one key while the TLS handshake proves
    possession of another."""
    try:
        library = x509.load_der_x509_certificate(data)
        seen = (
            library.tbs_certificate_bytes,
            _spki(library.public_key()),
            library.signature_algorithm_oid.dotted_string,
            library.signature,
        )
    except (ValueError, UnsupportedAlgorithm):
        return  # e.g. Gramine's NULL signature parameters: the DER walk alone applies
    walked = (tbs, _spki(public_key), algorithm_oid, bit_string[1:])
    names = ("signed TBS bytes", "public key", "signature algorithm", "signature")
    for name, ours, theirs in zip(names, walked, seen, strict=True):
        if ours != theirs:
            raise CertificateFormatError(
                "certificate", f"the DER walk and the X.509 library disagree on the {name}"
            )


def _check_self_signature(
    public_key: PublicKeyTypes, algorithm_oid: str, tbs: bytes, bit_string: bytes
) -> None:
    digest = _SIGNATURE_HASHES.get(algorithm_oid)
    if digest is None or not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise EvidenceError(
            "certificate_signature", f"unsupported self-signature algorithm {algorithm_oid}"
        )
    if not bit_string or bit_string[0] != 0:
        raise CertificateFormatError("signatureValue", "BIT STRING with unused bits")
    try:
        public_key.verify(bit_string[1:], tbs, ec.ECDSA(digest))
    except InvalidSignature:
        raise EvidenceError(
            "certificate_signature", "the certificate is not signed by its own key"
        ) from None


def check_validity(evidence: CertificateEvidence, now: dt.datetime) -> None:
    if not evidence.not_before <= now <= evidence.not_after:
        raise EvidenceError(
            "certificate_validity",
            f"certificate is valid {evidence.not_before:%Y-%m-%dT%H:%M:%SZ} .. "
            f"{evidence.not_after:%Y-%m-%dT%H:%M:%SZ}, not at {now:%Y-%m-%dT%H:%M:%SZ}",
        )


def _parsed(quote: bytes, which: str) -> Quote:
    try:
        return parse_quote(quote)
    except QuoteFormatError as exc:
        raise CertificateFormatError(which, f"quote: {exc}") from exc


def _expect_binding(which: str, report_data: bytes, digest: bytes) -> None:
    expected = digest + bytes(32)
    if report_data != expected:
        raise EvidenceError(
            "report_data_binding",
            f"{which}: quote report_data does not bind this certificate's key "
            f"(expected {expected[:32].hex()}, got {report_data[:32].hex()}...)",
        )


def tcg_claims(spki_der: bytes, manifest: AcceptedVersion | None = None) -> bytes:
    """The TCG claims map binding a key, {"pubkey-hash": bstr(CBOR [1, SHA-256(SPKI)])}, and
    with ``manifest`` the manifest in force, {"teaclave-ma/manifest": [version, bstr digest]}."""
    claims: dict[str, object] = {
        PUBKEY_HASH_CLAIM: cbor2.dumps([HASH_ALG_SHA256, hashlib.sha256(spki_der).digest()])
    }
    if manifest is not None:
        claims[MANIFEST_CLAIM] = [manifest.version, bytes.fromhex(manifest.sha256)]
    return cbor2.dumps(claims)


def bound_quote(evidence: CertificateEvidence) -> Quote:
    """The quote that binds the certificate's key; every evidence extension present must
    bind, and where both are present they must attest the same enclave."""
    if evidence.legacy_quote is None and evidence.tcg_quote is None:
        raise EvidenceError(
            "no_quote", "certificate carries no SGX quote (no RA-TLS evidence extension)"
        )
    key_hash = hashlib.sha256(evidence.spki_der).digest()
    tcg = legacy = None
    if evidence.tcg_quote is not None and evidence.tcg_claims is not None:
        _check_tcg_claims(evidence.tcg_claims, evidence.spki_der)
        tcg = _parsed(evidence.tcg_quote, TCG_EVIDENCE_OID)
        _expect_binding(
            "TCG evidence", tcg.report_data, hashlib.sha256(evidence.tcg_claims).digest()
        )
    if evidence.legacy_quote is not None:
        legacy = _parsed(evidence.legacy_quote, LEGACY_QUOTE_OID)
        _expect_binding("legacy quote extension", legacy.report_data, key_hash)
    if legacy is not None and tcg is not None:
        _expect_same_enclave(legacy, tcg)
    chosen = legacy if legacy is not None else tcg
    assert chosen is not None  # one of the two is present, checked above
    return chosen


def _expect_same_enclave(legacy: Quote, tcg: Quote) -> None:
    """Only one of the two quotes is verified, so the other must not claim anything else:
    their report bodies may differ in report_data alone."""
    if type(legacy.body) is not type(tcg.body):
        raise EvidenceError(
            "evidence_mismatch", "the legacy quote and the TCG evidence come from different TEEs"
        )
    differing = [
        field.name
        for field in attrs.fields(type(legacy.body))
        if field.name not in ("report_data", "raw")
        and getattr(legacy.body, field.name) != getattr(tcg.body, field.name)
    ]
    if differing:
        raise EvidenceError(
            "evidence_mismatch",
            "the legacy quote and the TCG evidence attest different enclaves "
            f"(they differ in {', '.join(differing)})",
        )


def _claims_map(claims: bytes) -> dict[Any, Any]:
    decoded = _strict_cbor(claims, "claims")
    if not isinstance(decoded, dict):
        raise CertificateFormatError(TCG_EVIDENCE_OID, "claims are not a CBOR map")
    return decoded


def _check_tcg_claims(claims: bytes, spki_der: bytes) -> None:
    hashed = _claims_map(claims).get(PUBKEY_HASH_CLAIM)
    if not isinstance(hashed, bytes):
        raise CertificateFormatError(
            TCG_EVIDENCE_OID, f"claims are not a CBOR map with a bstr {PUBKEY_HASH_CLAIM!r}"
        )
    inner = _strict_cbor(hashed, PUBKEY_HASH_CLAIM)
    if not isinstance(inner, list | tuple) or len(inner) != 2:
        raise CertificateFormatError(
            TCG_EVIDENCE_OID, f"{PUBKEY_HASH_CLAIM} must be [hash-alg-id, hash]"
        )
    algorithm = inner[0]
    if type(algorithm) is not int or algorithm not in PUBKEY_HASHES:  # CBOR true == 1 in Python
        accepted = ", ".join(f"{number} ({name})" for number, name in PUBKEY_HASHES.items())
        raise EvidenceError(
            "report_data_binding",
            f"{PUBKEY_HASH_CLAIM} uses hash algorithm {algorithm!r}; accepted: {accepted}",
        )
    expected = hashlib.new(PUBKEY_HASHES[algorithm], spki_der).digest()
    if type(inner[1]) is not bytes or inner[1] != expected:
        raise EvidenceError(
            "report_data_binding",
            f"{PUBKEY_HASH_CLAIM} does not match this certificate's key "
            f"({PUBKEY_HASHES[algorithm]} of its SubjectPublicKeyInfo)",
        )


def peer_manifest(evidence: CertificateEvidence) -> AcceptedVersion:
    """The manifest the peer enforces, from its TCG claims; call it after ``bound_quote``,
    which checks that the TCG quote binds these claims.

    Every teaclave-ma service sends the claim, so a certificate without it (Gramine's own,
    or legacy-only evidence) cannot be a teaclave-ma peer and is refused."""
    if evidence.tcg_claims is None:
        raise MissingClaim(MANIFEST_CLAIM, "no TCG evidence extension, only the legacy quote")
    claim = _claims_map(evidence.tcg_claims).get(MANIFEST_CLAIM)
    if claim is None:
        raise MissingClaim(MANIFEST_CLAIM, "its TCG claims hold no manifest version")
    if (
        not isinstance(claim, list | tuple)
        or len(claim) != 2
        or type(claim[0]) is not int  # CBOR true would pass as 1
        or claim[0] < 0
        or type(claim[1]) is not bytes
        or len(claim[1]) != hashlib.sha256().digest_size
    ):
        raise CertificateFormatError(
            MANIFEST_CLAIM, "must be [unsigned version, 32-byte SHA-256 of the manifest]"
        )
    return AcceptedVersion(claim[0], claim[1].hex())
