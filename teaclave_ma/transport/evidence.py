"""Reading the evidence out of an RA-TLS certificate and checking that it binds the key.

Two evidence extensions exist (see ../shared/data/README.md for the facts):
- Gramine's legacy quote extension, OID 1.2.840.113741.1337.6, whose value is the raw quote
  and whose report_data is SHA-256(SubjectPublicKeyInfo DER) followed by 32 zero bytes.
  Gramine writes the OID's DER bytes as the OID value, so real certificates hold the OID
  0.6.9.42.840.113741.1337.6; both spellings are accepted.
- The TCG tagged-evidence extension, OID 2.23.133.5.4.9: CBOR tag 60000 over
  [bstr quote, bstr claims], claims = {"pubkey-hash": bstr(CBOR [1, SHA-256(SPKI)])},
  report_data = SHA-256(claims) followed by 32 zero bytes.

The certificate is parsed with the project's DER reader, because pyca/cryptography refuses
certificates with NULL signature parameters, which Gramine's (mbedTLS) certificates carry.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from typing import Any

import attrs
import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from teaclave_ma.attestation.errors import QuoteFormatError
from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.formats import der
from teaclave_ma.formats.der import DerError, Tlv
from teaclave_ma.transport.errors import CertificateFormatError, EvidenceError

LEGACY_QUOTE_OID = "1.2.840.113741.1337.6"
LEGACY_QUOTE_OID_GRAMINE = "0.6.9.42.840.113741.1337.6"
TCG_EVIDENCE_OID = "2.23.133.5.4.9"
TCG_EVIDENCE_TAG = 60000
PUBKEY_HASH_CLAIM = "pubkey-hash"
HASH_ALG_SHA256 = 1
MAX_EVIDENCE = 64 * 1024
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


def _to_der(certificate: bytes) -> bytes:
    if certificate.lstrip().startswith(b"-----BEGIN"):
        try:
            return _pem_to_der(certificate)
        except ValueError as exc:
            raise CertificateFormatError("certificate", f"bad PEM ({exc})") from exc
    return certificate


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


def _time(item: Tlv) -> dt.datetime:
    text = item.value.decode("ascii", errors="replace")
    try:
        if item.tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
            moment = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
        elif item.tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
            moment = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise CertificateFormatError("validity", f"unexpected time tag 0x{item.tag:02x}")
    except ValueError as exc:
        raise CertificateFormatError("validity", f"bad time {text!r}") from exc
    return moment.replace(tzinfo=dt.UTC)


def _decode_tcg(value: bytes) -> tuple[bytes, bytes]:
    try:
        decoded: Any = cbor2.loads(value)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise CertificateFormatError(TCG_EVIDENCE_OID, f"not valid CBOR ({exc})") from exc
    if not isinstance(decoded, cbor2.CBORTag) or decoded.tag != TCG_EVIDENCE_TAG:
        raise CertificateFormatError(TCG_EVIDENCE_OID, f"expected CBOR tag {TCG_EVIDENCE_TAG}")
    body = decoded.value
    if (
        not isinstance(body, list | tuple)
        or len(body) != 2
        or not all(isinstance(x, bytes) for x in body)
    ):
        raise CertificateFormatError(TCG_EVIDENCE_OID, "expected [bstr evidence, bstr claims]")
    return body[0], body[1]


def extract_evidence(certificate: bytes) -> CertificateEvidence:
    """Parse a certificate (PEM or DER) and collect its evidence extensions."""
    data = _to_der(bytes(certificate))
    try:
        outer = der.expect_tag(
            der.read_single(data, "certificate"), der.TAG_SEQUENCE, "certificate"
        )
        parts = outer.children("certificate")
        if len(parts) != 3:
            raise CertificateFormatError("certificate", f"expected 3 elements, got {len(parts)}")
        tbs, algorithm, signature = parts
        der.expect_tag(tbs, der.TAG_SEQUENCE, "tbsCertificate")
        der.expect_tag(signature, der.TAG_BIT_STRING, "signatureValue")
        fields = tbs.children("tbsCertificate")
        if fields and fields[0].tag == 0xA0:  # explicit version
            fields = fields[1:]
        if len(fields) < 6:
            raise CertificateFormatError("tbsCertificate", "too few fields")
        validity = der.expect_tag(fields[3], der.TAG_SEQUENCE, "validity").children("validity")
        if len(validity) != 2:
            raise CertificateFormatError("validity", "expected notBefore and notAfter")
        spki = der.expect_tag(fields[5], der.TAG_SEQUENCE, "subjectPublicKeyInfo")
        extensions = [f for f in fields[6:] if f.tag == 0xA3]
        found: dict[str, bytes] = {}
        legacy_oid: str | None = None
        for item in (
            extensions[0].children("extensions")[0].children("extensions") if extensions else []
        ):
            elements = item.children("extension")
            oid = der.decode_oid(
                der.expect_tag(elements[0], der.TAG_OID, "extension").value, "extension"
            )
            value = der.expect_tag(elements[-1], der.TAG_OCTET_STRING, oid).value
            key = LEGACY_QUOTE_OID if oid in (LEGACY_QUOTE_OID, LEGACY_QUOTE_OID_GRAMINE) else oid
            if key in found:
                raise EvidenceError(
                    "duplicate_extension", f"extension {oid} appears more than once"
                )
            if key in (LEGACY_QUOTE_OID, TCG_EVIDENCE_OID) and len(value) > MAX_EVIDENCE:
                raise EvidenceError(
                    "oversized_extension",
                    f"extension {oid} holds {len(value)} bytes (limit {MAX_EVIDENCE})",
                )
            found[key] = value
            if key == LEGACY_QUOTE_OID:
                legacy_oid = oid
        algorithm_oid = der.decode_oid(
            der.expect_tag(
                algorithm.children("signatureAlgorithm")[0], der.TAG_OID, "signatureAlgorithm"
            ).value,
            "signatureAlgorithm",
        )
    except DerError as exc:
        raise CertificateFormatError(exc.field, exc.problem) from exc
    except IndexError as exc:  # an empty SEQUENCE where elements are required
        raise CertificateFormatError("certificate", "truncated structure") from exc
    try:
        public_key = serialization.load_der_public_key(spki.encoded())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateFormatError(
            "subjectPublicKeyInfo", f"unusable public key ({exc})"
        ) from exc
    _check_self_signature(public_key, algorithm_oid, tbs.encoded(), signature.value)
    tcg_quote = tcg_claims = None
    if TCG_EVIDENCE_OID in found:
        tcg_quote, tcg_claims = _decode_tcg(found[TCG_EVIDENCE_OID])
    legacy = found.get(LEGACY_QUOTE_OID)
    return CertificateEvidence(
        der=data,
        sha256=hashlib.sha256(data).digest(),
        spki_der=spki.encoded(),
        public_key=public_key,
        not_before=_time(validity[0]),
        not_after=_time(validity[1]),
        extension_oids=tuple(found),
        legacy_quote=legacy,
        legacy_oid=legacy_oid,
        tcg_quote=tcg_quote,
        tcg_claims=tcg_claims,
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


def _report_data(quote: bytes, which: str) -> bytes:
    try:
        return parse_quote(quote).report_data
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


def tcg_claims(spki_der: bytes) -> bytes:
    """The TCG claims map binding a key: {"pubkey-hash": bstr(CBOR [1, SHA-256(SPKI)])}."""
    return cbor2.dumps(
        {PUBKEY_HASH_CLAIM: cbor2.dumps([HASH_ALG_SHA256, hashlib.sha256(spki_der).digest()])}
    )


def bound_quote(evidence: CertificateEvidence) -> bytes:
    """The quote that binds the certificate's key; every evidence extension present must bind."""
    if evidence.legacy_quote is None and evidence.tcg_quote is None:
        raise EvidenceError(
            "no_quote", "certificate carries no SGX quote (no RA-TLS evidence extension)"
        )
    key_hash = hashlib.sha256(evidence.spki_der).digest()
    if evidence.tcg_quote is not None and evidence.tcg_claims is not None:
        _check_tcg_claims(evidence.tcg_claims, key_hash)
        _expect_binding(
            "TCG evidence",
            _report_data(evidence.tcg_quote, TCG_EVIDENCE_OID),
            hashlib.sha256(evidence.tcg_claims).digest(),
        )
    if evidence.legacy_quote is not None:
        _expect_binding(
            "legacy quote extension",
            _report_data(evidence.legacy_quote, LEGACY_QUOTE_OID),
            key_hash,
        )
        return evidence.legacy_quote
    assert evidence.tcg_quote is not None
    return evidence.tcg_quote


def _check_tcg_claims(claims: bytes, key_hash: bytes) -> None:
    try:
        decoded: Any = cbor2.loads(claims)
        inner: Any = cbor2.loads(decoded[PUBKEY_HASH_CLAIM]) if isinstance(decoded, dict) else None
    except (cbor2.CBORDecodeError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise CertificateFormatError(
            TCG_EVIDENCE_OID, f"claims are not a CBOR map with {PUBKEY_HASH_CLAIM!r} ({exc})"
        ) from exc
    if not isinstance(inner, list | tuple) or len(inner) != 2:
        raise CertificateFormatError(
            TCG_EVIDENCE_OID, f"{PUBKEY_HASH_CLAIM} must be [hash-alg-id, hash]"
        )
    if inner[0] != HASH_ALG_SHA256:
        raise EvidenceError(
            "report_data_binding",
            f"{PUBKEY_HASH_CLAIM} uses hash algorithm {inner[0]!r}; only 1 (SHA-256) is accepted",
        )
    if inner[1] != key_hash:
        raise EvidenceError(
            "report_data_binding", f"{PUBKEY_HASH_CLAIM} does not match this certificate's key"
        )
