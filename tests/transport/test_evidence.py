"""RA-TLS certificates: Gramine's real one, ours, and crafted bad ones."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.formats import der
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.transport import evidence as evidence_module
from teaclave_ma.transport.errors import CertificateFormatError, EvidenceError
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    LEGACY_QUOTE_OID_GRAMINE,
    MAX_CERTIFICATE,
    MAX_EXTENSION,
    MAX_TCG_CLAIMS,
    TCG_EVIDENCE_OID,
    bound_quote,
    check_validity,
    extract_evidence,
    tcg_claims,
)
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import AcceptedVersion
from tests.helpers import (
    craft_certificate,
    legacy_quote,
    spki_of,
    tcg_evidence,
    tcg_extension,
)

IDENTITY = SgxIdentity(b"\x55" * 32, b"\x66" * 32, isv_prod_id=1, isv_svn=1, debug=False)
NOW = dt.datetime.now(dt.UTC)


MANIFEST = AcceptedVersion(3, hashlib.sha256(b"manifest v3").hexdigest())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def bound_certificate(
    platform: SimulatedPlatform, edit_tbs: Callable[[list[bytes]], list[bytes]] | None = None
) -> bytes:
    """A certificate of a fresh key that its legacy quote binds; ``edit_tbs`` may change the
    encoded TBS fields before signing (see ``craft_certificate``)."""
    key = new_key()
    return craft_certificate(
        key, [(LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, key))], edit_tbs=edit_tbs
    )


def test_gramine_certificate_is_read_despite_null_signature_parameters(gramine_cert: bytes) -> None:
    with pytest.raises(ValueError):  # the reason the DER reader exists
        x509.load_pem_x509_certificate(gramine_cert)
    evidence = extract_evidence(gramine_cert)
    assert evidence.legacy_oid == LEGACY_QUOTE_OID_GRAMINE
    assert {LEGACY_QUOTE_OID, TCG_EVIDENCE_OID} <= set(evidence.extension_oids)
    quote = bound_quote(evidence)  # both extensions bind the key, and agree on the enclave
    assert quote.report_data[:32] == hashlib.sha256(evidence.spki_der).digest()
    assert evidence.tcg_quote is not None and evidence.tcg_claims is not None
    assert (
        parse_quote(evidence.tcg_quote).report_data[:32]
        == hashlib.sha256(evidence.tcg_claims).digest()
    )


def test_created_certificate_round_trips_with_both_extensions(platform: SimulatedPlatform) -> None:
    der = create_ratls_certificate(
        new_key(),
        lambda rd: platform.quote(IDENTITY, rd),
        common_name="storage",
        now=NOW,
        lifetime=dt.timedelta(hours=1),
        manifest=MANIFEST,
    )
    evidence = extract_evidence(der)  # its basicConstraints is critical, and understood
    assert evidence.legacy_oid == LEGACY_QUOTE_OID
    assert bound_quote(evidence).body.identity() == IDENTITY  # type: ignore[union-attr]
    check_validity(evidence, NOW)
    with pytest.raises(EvidenceError) as expired:
        check_validity(evidence, NOW + dt.timedelta(hours=2))
    assert expired.value.check == "certificate_validity"


def test_quote_of_another_key_is_refused(platform: SimulatedPlatform) -> None:
    key = new_key()
    replayed = craft_certificate(
        key, [(LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, new_key()))]
    )
    with pytest.raises(EvidenceError) as caught:
        bound_quote(extract_evidence(replayed))
    assert caught.value.check == "report_data_binding"
    assert "expected" in str(caught.value)


def test_tcg_evidence_of_another_key_is_refused_even_when_legacy_binds(
    platform: SimulatedPlatform,
) -> None:
    key = new_key()
    certificate = craft_certificate(
        key,
        [
            (LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, key)),
            (TCG_EVIDENCE_OID, tcg_evidence(platform, IDENTITY, new_key())),
        ],
    )
    with pytest.raises(EvidenceError) as caught:
        bound_quote(extract_evidence(certificate))
    assert caught.value.check == "report_data_binding"


def signed_claims(platform: SimulatedPlatform, claims: bytes) -> bytes:
    """A TCG extension whose quote binds exactly ``claims``, whatever they say."""
    return tcg_extension(
        platform.quote(IDENTITY, hashlib.sha256(claims).digest() + bytes(32)), claims
    )


def hashed_key_certificate(platform: SimulatedPlatform, algorithm: object, hash_name: str) -> bytes:
    """A certificate whose TCG claims say pubkey-hash [algorithm, hash_name(SPKI)]."""
    key = new_key()
    digest = hashlib.new(hash_name, spki_of(key)).digest()
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([algorithm, digest])})
    return craft_certificate(key, [(TCG_EVIDENCE_OID, signed_claims(platform, claims))])


@pytest.mark.parametrize(("algorithm", "hash_name"), [(7, "sha384"), (8, "sha512")])
def test_tcg_claims_may_hash_the_key_with_sha384_or_sha512(
    platform: SimulatedPlatform, algorithm: int, hash_name: str
) -> None:
    """The CCC format asks verifiers to accept these two besides SHA-256."""
    evidence = extract_evidence(hashed_key_certificate(platform, algorithm, hash_name))
    assert evidence.tcg_claims is not None
    assert bound_quote(evidence).report_data[:32] == hashlib.sha256(evidence.tcg_claims).digest()


@pytest.mark.parametrize(("algorithm", "hash_name"), [(7, "sha256"), (8, "sha384"), (1, "sha512")])
def test_a_pubkey_hash_of_another_algorithm_than_it_names_is_refused(
    platform: SimulatedPlatform, algorithm: int, hash_name: str
) -> None:
    certificate = hashed_key_certificate(platform, algorithm, hash_name)
    with pytest.raises(EvidenceError, match="does not match this certificate's key") as caught:
        bound_quote(extract_evidence(certificate))
    assert caught.value.check == "report_data_binding"


@pytest.mark.parametrize(
    ("algorithm", "shown"),
    [(2, "2"), (6, "6"), (9, "9"), (True, "True"), (1.0, "1.0")],
    ids=["sha-256-128", "sha-256-32", "unassigned", "true", "float"],
)
def test_tcg_claims_with_another_hash_algorithm_are_refused(
    platform: SimulatedPlatform, algorithm: object, shown: str
) -> None:
    """Only the integers 1, 7 and 8 name accepted algorithms (truncated SHA-256 forms are
    not); CBOR true and 1.0 equal 1 in Python, not in CBOR."""
    certificate = hashed_key_certificate(platform, algorithm, "sha256")
    with pytest.raises(EvidenceError, match=f"hash algorithm {shown}; accepted: 1 "):
        bound_quote(extract_evidence(certificate))


@pytest.mark.parametrize(
    ("validity", "problem"),
    [
        pytest.param((0x17, b"2411112000Z"), "bad time", id="utctime-too-short"),
        pytest.param((0x17, b"24111120000Z"), "bad time", id="utctime-field-not-fixed"),
        pytest.param((0x18, b"2024111120000Z"), "bad time", id="generalizedtime-too-short"),
        pytest.param((0x17, b"241111200000+0100"), "bad time", id="utctime-offset"),
    ],
)
def test_certificate_times_must_be_in_ders_fixed_form(
    platform: SimulatedPlatform, validity: tuple[int, bytes], problem: str
) -> None:
    good = der.encode_tlv(0x17, b"991231235959Z")
    bad = der.encode_tlv(*validity)
    certificate = bound_certificate(
        platform, lambda fields: [*fields[:4], der.encode_sequence(bad, good), *fields[5:]]
    )
    with pytest.raises(CertificateFormatError, match=problem) as caught:
        extract_evidence(certificate)
    assert caught.value.field == "validity"


def test_utctime_years_follow_rfc_5280s_window(platform: SimulatedPlatform) -> None:
    """YY 50-99 is 19YY and 00-49 is 20YY (RFC 5280, 4.1.2.5.1), not strptime's 1969 pivot."""
    validity = der.encode_sequence(
        der.encode_tlv(0x17, b"500101000000Z"), der.encode_tlv(0x17, b"491231235959Z")
    )
    certificate = bound_certificate(platform, lambda fields: [*fields[:4], validity, *fields[5:]])
    evidence = extract_evidence(certificate)
    assert (evidence.not_before.year, evidence.not_after.year) == (1950, 2049)


def test_legacy_and_tcg_quotes_of_different_enclaves_are_refused(
    platform: SimulatedPlatform,
) -> None:
    """Only one quote is verified; the other must not vouch for another enclave."""
    key = new_key()
    other = SgxIdentity(b"\x77" * 32, IDENTITY.mr_signer, isv_prod_id=1, isv_svn=1, debug=False)
    certificate = craft_certificate(
        key,
        [
            (LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, key)),
            (TCG_EVIDENCE_OID, tcg_evidence(platform, other, key)),
        ],
    )
    with pytest.raises(EvidenceError, match="differ in mr_enclave") as caught:
        bound_quote(extract_evidence(certificate))
    assert caught.value.check == "evidence_mismatch"


@pytest.mark.parametrize(
    ("extensions", "error", "check"),
    [
        (lambda q: [], EvidenceError, "no_quote"),
        (
            lambda q: [(LEGACY_QUOTE_OID, q), (LEGACY_QUOTE_OID, q)],
            EvidenceError,
            "duplicate_extension",
        ),
        (
            lambda q: [(LEGACY_QUOTE_OID, q), (LEGACY_QUOTE_OID_GRAMINE, q)],
            EvidenceError,
            "duplicate_extension",
        ),
        (
            lambda q: [(LEGACY_QUOTE_OID, q + bytes(MAX_EXTENSION))],
            EvidenceError,
            "oversized_extension",
        ),
        (  # refused on its size before the CBOR inside is looked at
            lambda q: [(TCG_EVIDENCE_OID, b"\xff" * (MAX_EXTENSION + 1))],
            EvidenceError,
            "oversized_extension",
        ),
        (
            lambda q: [(f"1.2.3.{i}", bytes(MAX_CERTIFICATE // 3)) for i in range(3)],
            EvidenceError,
            "oversized_certificate",
        ),
        (lambda q: [(TCG_EVIDENCE_OID, b"\xff\x00garbage")], CertificateFormatError, None),
        (
            lambda q: [(TCG_EVIDENCE_OID, cbor2.dumps(cbor2.CBORTag(1234, [q, b""])))],
            CertificateFormatError,
            None,
        ),
        (lambda q: [(TCG_EVIDENCE_OID, cbor2.dumps([q, b""]))], CertificateFormatError, None),
    ],
    ids=[
        "no-quote",
        "duplicate",
        "duplicate-both-spellings",
        "oversized-extension",
        "oversized-before-decoding",
        "oversized-certificate",
        "garbage-cbor",
        "wrong-cbor-tag",
        "untagged",
    ],
)
def test_malformed_evidence_is_refused(
    platform: SimulatedPlatform,
    extensions: Callable[[bytes], list[tuple[str, bytes]]],
    error: type[Exception],
    check: str | None,
) -> None:
    key = new_key()
    certificate = craft_certificate(key, extensions(legacy_quote(platform, IDENTITY, key)))
    with pytest.raises(error) as caught:
        bound_quote(extract_evidence(certificate))
    if check is not None:
        assert caught.value.check == check  # type: ignore[attr-defined]


def test_an_oversized_pem_is_refused_before_decoding() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"A" * (2 * MAX_CERTIFICATE) + b"\n"
    with pytest.raises(EvidenceError) as caught:
        extract_evidence(pem)
    assert caught.value.check == "oversized_certificate"


@pytest.mark.parametrize("oid", ["1.2.3.4", "2.5.29.15"], ids=["private", "key-usage"])
def test_an_unknown_critical_extension_is_refused(platform: SimulatedPlatform, oid: str) -> None:
    """RFC 5280, 4.2: a critical extension the reader does not process voids the certificate
    (keyUsage included: nothing here enforces it)."""
    key = new_key()
    certificate = craft_certificate(
        key,
        [(LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, key)), (oid, b"\x03\x01\x00", True)],
    )
    with pytest.raises(EvidenceError, match=oid) as caught:
        extract_evidence(certificate)
    assert caught.value.check == "unknown_critical_extension"


def test_critical_extensions_that_are_understood_are_accepted(platform: SimulatedPlatform) -> None:
    key = new_key()
    certificate = craft_certificate(
        key,
        [
            (LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, key), True),
            ("2.5.29.19", der.encode_sequence(), True),  # basicConstraints CA:FALSE
            ("1.2.3.4", b"\x05\x00"),  # unknown but not critical: ignored
        ],
    )
    assert bound_quote(extract_evidence(certificate)).body.identity() == IDENTITY  # type: ignore[union-attr]


def test_the_signed_algorithm_must_be_the_outer_one(platform: SimulatedPlatform) -> None:
    sha384 = der.encode_sequence(der.encode_oid("1.2.840.10045.4.3.3"))
    certificate = bound_certificate(
        platform,
        lambda fields: [*fields[:2], sha384, *fields[3:]],  # after version, serial
    )
    with pytest.raises(CertificateFormatError) as caught:
        extract_evidence(certificate)
    assert caught.value.field == "tbsCertificate.signature"


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(lambda fields: fields[1:], id="v1-implicit"),
        pytest.param(
            lambda fields: [der.encode_tlv(0xA0, der.encode_int(1)), *fields[1:]], id="v2"
        ),
        pytest.param(
            lambda fields: [der.encode_tlv(0xA0, der.encode_int(3)), *fields[1:]], id="v4"
        ),
    ],
)
def test_only_version_3_certificates_are_read(
    platform: SimulatedPlatform, version: Callable[[list[bytes]], list[bytes]]
) -> None:
    """Extensions exist only in v3; X.509 libraries disagree on other versions (found by
    fuzzing: cryptography raised its own InvalidVersion from the cross-check)."""
    certificate = bound_certificate(platform, version)
    with pytest.raises(CertificateFormatError) as caught:
        extract_evidence(certificate)
    assert caught.value.field == "tbsCertificate.version"


def test_a_second_extensions_block_is_refused(platform: SimulatedPlatform) -> None:
    """Read naively, the second block would hide a second quote from the duplicate check."""
    certificate = bound_certificate(platform, lambda fields: [*fields, fields[-1]])
    with pytest.raises(CertificateFormatError, match="unexpected fields after"):
        extract_evidence(certificate)


def test_the_der_walk_and_the_x509_library_must_agree(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser differential (simulated: the library is made to read another certificate)
    would let the quote bind one key while TLS proves possession of another."""
    certificate = bound_certificate(platform)
    extract_evidence(certificate)  # both readings agree
    decoy = x509.load_der_x509_certificate(craft_certificate(new_key(), []))
    monkeypatch.setattr(evidence_module.x509, "load_der_x509_certificate", lambda data: decoy)
    with pytest.raises(CertificateFormatError, match="disagree on the signed TBS bytes"):
        extract_evidence(certificate)


def _claims_map(*pairs: tuple[str, bytes]) -> bytes:
    """A CBOR map written pair by pair, so that keys may repeat."""
    return bytes([0xA0 + len(pairs)]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in pairs)


def _pubkey_hash(key: ec.EllipticCurvePrivateKey) -> bytes:
    return cbor2.dumps([1, hashlib.sha256(spki_of(key)).digest()])


@pytest.mark.parametrize(
    ("evidence", "error", "message"),
    [
        (
            lambda platform, key: tcg_evidence(platform, IDENTITY, key) + b"\x00",
            CertificateFormatError,
            "1 trailing bytes",
        ),
        (
            lambda platform, key: signed_claims(
                platform,
                _claims_map(
                    ("pubkey-hash", _pubkey_hash(key)), ("pubkey-hash", _pubkey_hash(new_key()))
                ),
            ),
            CertificateFormatError,
            "claims: not strict CBOR.*[Dd]uplicate",
        ),
        (
            lambda platform, key: (
                b"\xd9\xea\x60\x9f"  # tag 60000, indefinite-length array
                + cbor2.dumps(b"q")
                + cbor2.dumps(tcg_claims(spki_of(key)))
                + b"\xff"
            ),
            CertificateFormatError,
            "tagged evidence: not strict CBOR.*indefinite",
        ),
        (
            lambda platform, key: signed_claims(
                platform, cbor2.dumps({"pubkey-hash": _pubkey_hash(key), "x": [[[[[1]]]]]})
            ),
            CertificateFormatError,
            "claims: not strict CBOR.*depth",
        ),
        (
            lambda platform, key: signed_claims(
                platform,
                cbor2.dumps({"pubkey-hash": _pubkey_hash(key), "x": bytes(MAX_TCG_CLAIMS)}),
            ),
            EvidenceError,
            "TCG claims holds",
        ),
    ],
    ids=["trailing-bytes", "repeated-key", "indefinite-length", "too-deep", "oversized-claims"],
)
def test_tcg_evidence_must_be_strict_cbor(
    platform: SimulatedPlatform,
    evidence: Callable[[SimulatedPlatform, ec.EllipticCurvePrivateKey], bytes],
    error: type[Exception],
    message: str,
) -> None:
    """CBOR with two readings (the last repeated key wins in one decoder, the first in
    another; bytes after the item ignored) is refused, whatever the quote says."""
    key = new_key()
    certificate = craft_certificate(key, [(TCG_EVIDENCE_OID, evidence(platform, key))])
    with pytest.raises(error, match=message):
        bound_quote(extract_evidence(certificate))


def test_truncated_and_forged_certificates_are_refused(platform: SimulatedPlatform) -> None:
    good = bound_certificate(platform)
    for cut in (0, 10, len(good) // 2, len(good) - 1):
        with pytest.raises(CertificateFormatError):
            extract_evidence(good[:cut])
    forged = bytearray(good)
    forged[200] ^= 0x01  # inside the TBS: the self-signature no longer verifies
    with pytest.raises((EvidenceError, CertificateFormatError)):
        extract_evidence(bytes(forged))


def test_cert_inspect_shows_evidence_and_binding(
    gramine_cert: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gramine.pem"
    path.write_bytes(gramine_cert)
    assert main(["cert", "inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["binding"] == "ok"
    assert {e["oid"] for e in data["evidence_extensions"]} == {LEGACY_QUOTE_OID, TCG_EVIDENCE_OID}
    assert data["evidence_extensions"][0]["spelled"] == LEGACY_QUOTE_OID_GRAMINE
    assert (
        data["mr_enclave"] == bound_quote(extract_evidence(gramine_cert)).describe()["mr_enclave"]
    )


def test_cert_inspect_exit_1_on_binding_failure(
    platform: SimulatedPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key()
    path = tmp_path / "replayed.der"
    path.write_bytes(
        craft_certificate(key, [(LEGACY_QUOTE_OID, legacy_quote(platform, IDENTITY, new_key()))])
    )
    assert main(["cert", "inspect", str(path)]) == 1
    assert "does not bind" in capsys.readouterr().out
