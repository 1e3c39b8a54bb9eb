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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.formats import der
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.transport.errors import CertificateFormatError, EvidenceError
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    LEGACY_QUOTE_OID_GRAMINE,
    TCG_EVIDENCE_OID,
    bound_quote,
    check_validity,
    extract_evidence,
)
from teaclave_ma.transport.ratls_cert import create_ratls_certificate

IDENTITY = SgxIdentity(b"\x55" * 32, b"\x66" * 32, isv_prod_id=1, isv_svn=1, debug=False)
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


@pytest.fixture(scope="module")
def gramine_cert(shared_data: Path) -> bytes:
    return (shared_data / "ratls" / "gramine-cert.pem").read_bytes()


def test_gramine_certificate_is_read_despite_null_signature_parameters(gramine_cert: bytes) -> None:
    with pytest.raises(ValueError):  # the reason the DER reader exists
        x509.load_pem_x509_certificate(gramine_cert)
    evidence = extract_evidence(gramine_cert)
    assert evidence.legacy_oid == LEGACY_QUOTE_OID_GRAMINE
    assert {LEGACY_QUOTE_OID, TCG_EVIDENCE_OID} <= set(evidence.extension_oids)
    quote = bound_quote(evidence)  # both extensions bind the key
    assert parse_quote(quote).report_data[:32] == hashlib.sha256(evidence.spki_der).digest()
    assert evidence.tcg_quote is not None and evidence.tcg_claims is not None
    assert (
        parse_quote(evidence.tcg_quote).report_data[:32]
        == hashlib.sha256(evidence.tcg_claims).digest()
    )


def test_created_certificate_round_trips_with_both_extensions(platform: SimulatedPlatform) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = create_ratls_certificate(
        key,
        lambda rd: platform.quote(IDENTITY, rd),
        common_name="storage",
        now=NOW,
        lifetime=dt.timedelta(hours=1),
    )
    evidence = extract_evidence(der)
    assert evidence.legacy_oid == LEGACY_QUOTE_OID
    assert parse_quote(bound_quote(evidence)).body.identity() == IDENTITY  # type: ignore[union-attr]
    check_validity(evidence, NOW)
    with pytest.raises(EvidenceError) as expired:
        check_validity(evidence, NOW + dt.timedelta(hours=2))
    assert expired.value.check == "certificate_validity"


def build(
    extensions: list[tuple[str, bytes]], key: ec.EllipticCurvePrivateKey | None = None
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(hours=1))
    )  # fmt: skip
    certificate = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    # cryptography refuses duplicate extensions, so they are spliced in at the DER level.
    return _with_raw_extensions(certificate, key, extensions)


def _with_raw_extensions(
    certificate: bytes, key: ec.EllipticCurvePrivateKey, extensions: list[tuple[str, bytes]]
) -> bytes:
    outer = der.read_single(certificate, "c")
    tbs = outer.children()[0]
    fields = [f.encoded() for f in tbs.children()]
    items = [
        der.encode_sequence(der.encode_oid(oid), der.encode_tlv(der.TAG_OCTET_STRING, value))
        for oid, value in extensions
    ]
    if items:
        fields.append(der.encode_tlv(0xA3, der.encode_sequence(*items)))
    new_tbs = der.encode_sequence(*fields)
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    algorithm = outer.children()[1].encoded()
    return der.encode_sequence(
        new_tbs, algorithm, der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + signature)
    )


def legacy_for(
    key: ec.EllipticCurvePrivateKey,
    platform: SimulatedPlatform,
    *,
    bind_to: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    spki = (
        (bind_to or key)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return platform.quote(IDENTITY, hashlib.sha256(spki).digest() + bytes(32))


def test_quote_of_another_key_is_refused(platform: SimulatedPlatform) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    replayed = build([(LEGACY_QUOTE_OID, legacy_for(key, platform, bind_to=other))], key)
    with pytest.raises(EvidenceError) as caught:
        bound_quote(extract_evidence(replayed))
    assert caught.value.check == "report_data_binding"
    assert "expected" in str(caught.value)


def test_tcg_evidence_of_another_key_is_refused_even_when_legacy_binds(
    platform: SimulatedPlatform,
) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    other_spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([1, hashlib.sha256(other_spki).digest()])})
    tcg = cbor2.dumps(
        cbor2.CBORTag(
            60000, [platform.quote(IDENTITY, hashlib.sha256(claims).digest() + bytes(32)), claims]
        )
    )
    certificate = build(
        [(LEGACY_QUOTE_OID, legacy_for(key, platform)), (TCG_EVIDENCE_OID, tcg)], key
    )
    with pytest.raises(EvidenceError) as caught:
        bound_quote(extract_evidence(certificate))
    assert caught.value.check == "report_data_binding"


def test_tcg_claims_with_another_hash_algorithm_are_refused(platform: SimulatedPlatform) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = cbor2.dumps({"pubkey-hash": cbor2.dumps([7, hashlib.sha256(spki).digest()])})
    tcg = cbor2.dumps(
        cbor2.CBORTag(
            60000, [platform.quote(IDENTITY, hashlib.sha256(claims).digest() + bytes(32)), claims]
        )
    )
    with pytest.raises(EvidenceError, match="hash algorithm 7"):
        bound_quote(extract_evidence(build([(TCG_EVIDENCE_OID, tcg)], key)))


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
        (lambda q: [(LEGACY_QUOTE_OID, q + bytes(70_000))], EvidenceError, "oversized_extension"),
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
        "oversized",
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
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build(extensions(legacy_for(key, platform)), key)
    with pytest.raises(error) as caught:
        bound_quote(extract_evidence(certificate))
    if check is not None:
        assert caught.value.check == check  # type: ignore[attr-defined]


def test_truncated_and_forged_certificates_are_refused(platform: SimulatedPlatform) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = build([(LEGACY_QUOTE_OID, legacy_for(key, platform))], key)
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
        data["mr_enclave"]
        == parse_quote(bound_quote(extract_evidence(gramine_cert))).describe()["mr_enclave"]
    )


def test_cert_inspect_exit_1_on_binding_failure(
    platform: SimulatedPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "replayed.der"
    path.write_bytes(build([(LEGACY_QUOTE_OID, legacy_for(key, platform, bind_to=other))], key))
    assert main(["cert", "inspect", str(path)]) == 1
    assert "does not bind" in capsys.readouterr().out
