"""The CCC interoperability RA-TLS certificates (Gramine, Intel SGX SDK, rats-tls): real
certificates from SGX hardware, made by three other producers. teaclave-ma reads each,
checks its key binding by that producer's rule and its quote's PCK chain up to Intel's
pinned root, and refuses each as a peer; docs/interoperability.md says the same in prose.

No collateral from the time these quotes were made exists here, so the one full quote
verification that can be run uses the SGX collateral of ../shared/data, which belongs to
another platform, and must fail on the specific mismatch."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import attrs
import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.pki import chain_window, der_sha256, subject_cn, verify_chain
from teaclave_ma.attestation.quote import Quote, parse_quote, pck_certificates
from teaclave_ma.attestation.verifier import verify_quote
from teaclave_ma.cli.main import main
from teaclave_ma.errors import InputError
from teaclave_ma.formats import der
from teaclave_ma.testing.plugin import INTEROP_DIR, INTEROP_PRODUCERS, InteropCertificate
from teaclave_ma.transport.errors import EvidenceError
from teaclave_ma.transport.evidence import (
    BASIC_CONSTRAINTS_OID,
    LEGACY_QUOTE_OID,
    LEGACY_QUOTE_OID_GRAMINE,
    MANIFEST_CLAIM,
    TCG_EVIDENCE_OID,
    CertificateEvidence,
    MissingClaim,
    bound_quote,
    extract_evidence,
    peer_manifest,
    tcg_claims,
)
from teaclave_ma.transport.peer_verify import EVERY_POLICY, PeerVerifier
from tests.helpers import MovableClock, read_single, spki_of, tcg_extension
from tests.transport.test_peer_cache import STORAGE, Manifests, verified_manifest

NAMES = list(INTEROP_PRODUCERS)
SUBJECT_KEY_ID = "2.5.29.14"
AUTHORITY_KEY_ID = "2.5.29.35"
# Intel's SGX extensions OID (PCK certificates use it too): the SDK puts its quote there as well.
INTEL_SDK_QUOTE_OID = "1.2.840.113741.1.13.1"
# Inside every certificate's validity and every quote's PCK chain.
INSIDE_ALL = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# Inside the window of ../shared/data/sgx/collateral.json and of every PCK chain.
IN_THE_COLLATERAL_WINDOW = dt.datetime(2025, 6, 20, tzinfo=dt.UTC)
SGX_QUOTE_V3 = 3
ECDSA_P256 = 2  # the quote's attestation key type
PCK_CHAIN = 5  # certification data type: the PCK leaf, its CA and the root, in PEM


@attrs.frozen
class Expected:
    """What each producer writes, read from the certificate bytes and the CCC format docs."""

    oids: frozenset[str]
    legacy_oid: str | None
    mr_enclave_prefix: str
    pck_ca: str
    # The check a full verification fails with the other platform's collateral.
    mismatch_check: str
    mismatch: str


COMMON = frozenset({BASIC_CONSTRAINTS_OID, SUBJECT_KEY_ID, AUTHORITY_KEY_ID, TCG_EVIDENCE_OID})
PLATFORM_CA_MISMATCH = ("pck_crl", "is not signed by 'Intel SGX PCK Platform CA'")
EXPECTED = {
    "gramine": Expected(
        COMMON | {LEGACY_QUOTE_OID}, LEGACY_QUOTE_OID_GRAMINE, "0866e7ca11b9f4ef",
        "Intel SGX PCK Platform CA", *PLATFORM_CA_MISMATCH,
    ),
    "intel-sgxsdk": Expected(
        COMMON | {INTEL_SDK_QUOTE_OID}, None, "09e218a4be9dadbf", "Intel SGX PCK Processor CA",
        "fmspc", "PCK FMSPC 00706a100000 differs from TCB info FMSPC 00a067110000",
    ),
    "rats-tls": Expected(
        COMMON, None, "38e1b40b8c68186f", "Intel SGX PCK Platform CA", *PLATFORM_CA_MISMATCH
    ),
}  # fmt: skip


@pytest.fixture(params=NAMES)
def interop(
    request: pytest.FixtureRequest, interop_certificate: Callable[[str], InteropCertificate]
) -> InteropCertificate:
    certificate: InteropCertificate = interop_certificate(request.param)
    return certificate


def evidence_of(certificate: InteropCertificate) -> CertificateEvidence:
    return extract_evidence(certificate.pem)


# -- the package data ------------------------------------------------------------------------


def test_the_fixture_serves_every_certificate_with_its_provenance(
    interop_certificates: dict[str, InteropCertificate], shared_data: Path
) -> None:
    assert set(interop_certificates) == {"gramine", "intel-sgxsdk", "rats-tls"}
    readme = (INTEROP_DIR / "README.md").read_text()
    assert "ce44a86e2f8c79ea0e5b25a8d70b25fc533d57db" in readme  # the upstream commit
    for name, certificate in interop_certificates.items():
        assert certificate.path == INTEROP_DIR / f"{name}-cert.pem"
        assert certificate.pem == certificate.path.read_bytes()
        assert certificate.tee == "SGX"
        digest = hashlib.sha256(certificate.pem).hexdigest()
        assert f"| `{name}-cert.pem` | `{digest}` |" in readme
    # The one of them that ../shared/data also holds is byte-identical to it.
    assert (
        interop_certificates["gramine"].pem == (shared_data / "ratls/gramine-cert.pem").read_bytes()
    )
    licence = (INTEROP_DIR / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert hashlib.sha256(licence.encode()).hexdigest() in readme


def test_an_unknown_certificate_name_is_refused_naming_the_known_ones(
    interop_certificate: Callable[[str], InteropCertificate],
) -> None:
    with pytest.raises(InputError) as caught:
        interop_certificate("open-enclave")
    assert caught.value.field == "interop_certificate"
    assert "'open-enclave' (known: gramine, intel-sgxsdk, rats-tls)" in str(caught.value)


# -- what the reader finds -------------------------------------------------------------------


def test_the_reader_finds_each_producers_evidence_and_parses_its_quote(
    interop: InteropCertificate,
) -> None:
    expected = EXPECTED[interop.name]
    evidence = evidence_of(interop)
    assert set(evidence.extension_oids) == expected.oids
    assert evidence.legacy_oid == expected.legacy_oid
    assert evidence.tcg_quote is not None  # every producer writes the TCG evidence
    quote = bound_quote(evidence)
    assert quote.tee == interop.tee
    assert quote.header.version == SGX_QUOTE_V3
    assert quote.header.attestation_key_type == ECDSA_P256
    assert quote.certification.certification_data_type == PCK_CHAIN
    assert quote.body.debug  # all three are debug enclaves
    assert quote.describe()["mr_enclave"].startswith(expected.mr_enclave_prefix)


def test_each_binding_follows_its_producers_rule(interop: InteropCertificate) -> None:
    evidence = evidence_of(interop)
    key_hash = hashlib.sha256(evidence.spki_der).digest()
    assert evidence.tcg_quote is not None and evidence.tcg_claims is not None
    # TCG evidence (all three): the quote binds the claims, the claims bind the key.
    claims = cbor2.loads(evidence.tcg_claims)
    assert cbor2.loads(claims["pubkey-hash"]) == [1, key_hash]
    tcg_report_data = parse_quote(evidence.tcg_quote).report_data
    assert tcg_report_data == hashlib.sha256(evidence.tcg_claims).digest() + bytes(32)
    # Gramine's legacy extension binds the key directly.
    if evidence.legacy_quote is not None:
        assert parse_quote(evidence.legacy_quote).report_data == key_hash + bytes(32)
    extra = set(claims) - {"pubkey-hash"}
    assert extra == ({"key_0", "key_1"} if interop.name == "rats-tls" else set())
    assert MANIFEST_CLAIM not in claims


def test_the_intel_sdk_repeats_its_quote_under_intels_oid(
    interop_certificate: Callable[[str], InteropCertificate],
) -> None:
    """The reader ignores that (non-critical) extension: the TCG evidence holds the same
    quote together with the claims it binds."""
    certificate = interop_certificate("intel-sgxsdk")
    repeated = (
        x509.load_pem_x509_certificate(certificate.pem)
        .extensions.get_extension_for_oid(x509.ObjectIdentifier(INTEL_SDK_QUOTE_OID))
        .value
    )
    assert isinstance(repeated, x509.UnrecognizedExtension)
    assert repeated.value == evidence_of(certificate).tcg_quote


def test_cert_inspect_reads_each_binding(
    interop: InteropCertificate, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cert", "inspect", str(interop.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["binding"] == "ok"
    assert data["mr_enclave"].startswith(EXPECTED[interop.name].mr_enclave_prefix)


# -- the quote's PCK chain and a verification without its collateral ----------------------------


def quote_of(certificate: InteropCertificate) -> Quote:
    return bound_quote(evidence_of(certificate))


def test_each_pck_chain_verifies_to_intels_pinned_root(
    interop: InteropCertificate, shared_data: Path
) -> None:
    chain = pck_certificates(quote_of(interop).certification.pck_chain_pem)
    assert [subject_cn(c) for c in chain] == [
        "Intel SGX PCK Certificate",
        EXPECTED[interop.name].pck_ca,
        "Intel SGX Root CA",
    ]
    pinned = hashlib.sha256((shared_data / "intel_sgx_root_ca.der").read_bytes()).digest()
    assert der_sha256(chain[-1]) == INTEL_SGX_ROOT_CA.root_sha256 == pinned
    start, end = chain_window(chain)
    verify_chain(chain, INTEL_SGX_ROOT_CA, INSIDE_ALL, "pck_chain")
    verify_chain(chain, INTEL_SGX_ROOT_CA, start + (end - start) / 2, "pck_chain")
    with pytest.raises(QuoteVerificationError) as caught:
        verify_chain(chain, INTEL_SGX_ROOT_CA, end + dt.timedelta(seconds=1), "pck_chain")
    assert caught.value.check == "pck_chain_validity"
    assert "'Intel SGX PCK Certificate' is not valid at" in str(caught.value)


def test_full_verification_with_another_platforms_collateral_fails_on_the_mismatch(
    interop: InteropCertificate, shared_data: Path
) -> None:
    collateral = Collateral.from_json((shared_data / "sgx" / "collateral.json").read_bytes())
    expected = EXPECTED[interop.name]
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote_of(interop), collateral, IN_THE_COLLATERAL_WINDOW, EVERY_POLICY)
    assert caught.value.check == expected.mismatch_check
    assert expected.mismatch in str(caught.value)


# -- tampering ------------------------------------------------------------------------------


ExtensionEdit = Callable[[str, bytes], bytes | None]  # (oid, value) -> new value, None: drop it


def resigned(
    certificate: InteropCertificate,
    key: ec.EllipticCurvePrivateKey,
    edit: ExtensionEdit = lambda oid, value: value,
) -> bytes:
    """The certificate with ``key``'s public key in place of its own and its extensions
    passed through ``edit``, self-signed by ``key``: what a host that copied a genuine
    certificate's evidence can present."""
    tbs, algorithm, _ = read_single(evidence_of(certificate).der).children()
    fields = tbs.children()
    extensions = read_single(fields[7].value).children()
    items = []
    for item in extensions:
        parts = item.children()
        oid = der.decode_oid(parts[0].value, "oid")
        value = edit(oid, parts[-1].value)
        if value is not None:
            items.append(
                der.encode_sequence(
                    *(p.encoded() for p in parts[:-1]), der.encode_tlv(der.TAG_OCTET_STRING, value)
                )
            )
    new_tbs = der.encode_sequence(
        *(f.encoded() for f in fields[:6]),
        spki_of(key),
        der.encode_tlv(fields[7].tag, der.encode_sequence(*items)),
    )
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))  # the algorithm all three name
    return der.encode_sequence(
        new_tbs, algorithm.encoded(), der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + signature)
    )


def binding_error(certificate: bytes) -> str:
    with pytest.raises(EvidenceError) as caught:
        bound_quote(extract_evidence(certificate))
    assert caught.value.check == "report_data_binding"
    return str(caught.value)


REPORT_DATA_IN_QUOTE = 48 + 320  # SGX quote v3: header, then report_data at 320 in the body


def test_one_flipped_byte_of_the_quote_breaks_the_producers_signature(
    interop: InteropCertificate,
) -> None:
    evidence = evidence_of(interop)
    assert evidence.tcg_quote is not None
    at = evidence.der.rindex(evidence.tcg_quote) + REPORT_DATA_IN_QUOTE
    tampered = bytearray(evidence.der)
    tampered[at] ^= 0x01
    with pytest.raises(EvidenceError) as caught:
        extract_evidence(bytes(tampered))
    assert caught.value.check == "certificate_signature"
    assert "not signed by its own key" in str(caught.value)


def test_the_evidence_copied_into_a_certificate_for_another_key_does_not_bind_it(
    interop: InteropCertificate,
) -> None:
    replayed = resigned(interop, ec.generate_private_key(ec.SECP256R1()))
    extract_evidence(replayed)  # well formed and self-signed: only the binding is wrong
    assert "pubkey-hash does not match this certificate's key" in binding_error(replayed)


def test_claims_rewritten_for_another_key_are_not_what_the_quote_binds(
    interop: InteropCertificate,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    quote = evidence_of(interop).tcg_quote
    assert quote is not None

    def own_claims(oid: str, value: bytes) -> bytes:
        return tcg_extension(quote, tcg_claims(spki_of(key))) if oid == TCG_EVIDENCE_OID else value

    message = binding_error(resigned(interop, key, own_claims))
    assert "TCG evidence: quote report_data does not bind this certificate's key" in message


def test_gramines_legacy_quote_alone_does_not_bind_another_key(
    interop_certificate: Callable[[str], InteropCertificate],
) -> None:
    def legacy_only(oid: str, value: bytes) -> bytes | None:
        return None if oid == TCG_EVIDENCE_OID else value

    replayed = resigned(
        interop_certificate("gramine"), ec.generate_private_key(ec.SECP256R1()), legacy_only
    )
    assert extract_evidence(replayed).tcg_quote is None
    message = binding_error(replayed)
    assert "legacy quote extension: quote report_data does not bind" in message


# -- as peers ------------------------------------------------------------------------------


def peer_verifier(now: dt.datetime) -> PeerVerifier:
    def no_collateral(quote: Quote) -> Collateral:
        pytest.fail("a certificate refused on its claims must cost no collateral fetch")

    return PeerVerifier(
        Manifests(verified_manifest({"storage": [STORAGE]})),
        INTEL_SGX_ROOT_CA,
        no_collateral,
        clock=MovableClock(now),
    )


def test_none_is_accepted_as_a_peer_for_want_of_the_manifest_claim(
    interop: InteropCertificate,
) -> None:
    with pytest.raises(MissingClaim) as caught:
        peer_verifier(INSIDE_ALL).verify(interop.pem, ["storage"])
    assert caught.value.check == "missing_claim"
    assert f"carries no {MANIFEST_CLAIM!r} claim (its TCG claims hold no manifest version)" in str(
        caught.value
    )
    with pytest.raises(MissingClaim):  # the same reason, asked of the evidence directly
        peer_manifest(evidence_of(interop))


def test_the_rats_tls_certificate_is_refused_first_for_its_expiry(
    interop_certificate: Callable[[str], InteropCertificate],
) -> None:
    certificate = interop_certificate("rats-tls")
    with pytest.raises(EvidenceError) as caught:
        peer_verifier(dt.datetime(2024, 3, 1, tzinfo=dt.UTC)).verify(certificate.pem, ["storage"])
    assert caught.value.check == "certificate_validity"
    assert "valid 2023-02-22T16:10:22Z .. 2024-02-22T17:10:22Z" in str(caught.value)
