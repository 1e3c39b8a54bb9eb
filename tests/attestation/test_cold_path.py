"""What the cold path (a quote and collateral seen for the first time) shares and reads
directly: a certificate carried by several chains is touched once, the root's fingerprint
and a CRL's issuer name are computed once, the PCK extension finds known OIDs by their
encoding, and well-formed TCB levels are read without the field-by-field reader, which must
agree with it. A failure is never remembered; other bytes are read afresh."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from teaclave_ma.attestation import collateral as collateral_module
from teaclave_ma.attestation import pki, x509_load
from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import (
    CollateralError,
    PckExtensionError,
    QuoteFormatError,
    QuoteVerificationError,
)
from teaclave_ma.attestation.pck_extension import (
    SGX_EXTENSION_OID,
    parse_pck_extension,
    parse_pck_extension_value,
)
from teaclave_ma.attestation.quote import parse_quote, pck_certificates
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.formats import der
from tests.attestation.conftest import SAMPLE_TIME
from tests.attestation.test_verify import IDENTITY, REPORT_DATA
from tests.attestation.test_verify_caches import (  # empty_caches: autouse, clears them all
    Calls,
    empty_caches,  # noqa: F401
)
from tests.fuzz.mutations import FUZZ, tree_mutated
from tests.helpers import craft_certificate, read_single


def pem_of(der_bytes: bytes) -> bytes:
    return x509.load_der_x509_certificate(der_bytes).public_bytes(serialization.Encoding.PEM)


def simulated_pck_chain() -> list[x509.Certificate]:
    quote = SimulatedPlatform.create().quote(IDENTITY, REPORT_DATA)
    return pck_certificates(parse_quote(quote).certification.pck_chain_pem)


# -- certificates touched once per distinct certificate -------------------------------------


def test_a_certificate_in_several_chains_is_touched_once(
    monkeypatch: pytest.MonkeyPatch, sgx_quote: bytes, sgx_collateral: bytes
) -> None:
    touches = Calls(monkeypatch, x509_load, "_touch_certificate")
    pck_chain = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)
    collateral = Collateral.from_json(sgx_collateral)
    # Seven certificates in three chains, four distinct: PCK, platform CA, TCB signing, root.
    assert touches.count == 4
    assert collateral.pck_crl_issuer_chain[0] is pck_chain[1]
    assert collateral.tcb_info_issuer_chain[-1] is pck_chain[-1]


def test_other_certificates_are_touched_afresh(
    monkeypatch: pytest.MonkeyPatch, sgx_quote: bytes
) -> None:
    touches = Calls(monkeypatch, x509_load, "_touch_certificate")
    pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)
    assert touches.count == 3
    simulated_pck_chain()
    assert touches.count == 6


def test_a_certificate_that_fails_its_touch_is_refused_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # cryptography loads a certificate with a duplicate extension and raises only when the
    # extensions are read: the touch's job.
    duplicate = ("1.2.3.4", b"\x05\x00")
    crafted = craft_certificate(ec.generate_private_key(ec.SECP256R1()), [duplicate, duplicate])
    touches = Calls(monkeypatch, x509_load, "_touch_certificate")
    for attempt in (1, 2):
        with pytest.raises(QuoteFormatError, match="not a well-formed PEM certificate chain"):
            x509_load.load_pem_chain(pem_of(crafted), "certification_data", QuoteFormatError)
        assert touches.count == attempt


# -- the root's fingerprint ------------------------------------------------------------------


def test_the_root_fingerprint_is_computed_once_and_other_roots_are_refused(
    sgx_quote: bytes, sgx_collateral: bytes
) -> None:
    pck_chain = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)
    collateral = Collateral.from_json(sgx_collateral)
    pki.verify_chain(pck_chain, INTEL_SGX_ROOT_CA, SAMPLE_TIME, "pck_chain")
    pki.verify_chain(collateral.tcb_info_issuer_chain, INTEL_SGX_ROOT_CA, SAMPLE_TIME, "tcb")
    fingerprints = pki.der_sha256.cache_info()
    assert (fingerprints.hits, fingerprints.misses) == (1, 1)
    simulated = simulated_pck_chain()
    for _ in (1, 2):
        with pytest.raises(QuoteVerificationError) as refused:
            pki.verify_chain(simulated, INTEL_SGX_ROOT_CA, SAMPLE_TIME, "pck_chain")
        assert refused.value.check == "simulated_root"
    assert pki.der_sha256.cache_info().misses == 2


# -- a CRL's facts (issuer, TBS), read once for the touch and the signature check ---------


def test_a_crl_is_read_once_and_other_crls_afresh(sgx_quote: bytes, sgx_collateral: bytes) -> None:
    document = json.loads(sgx_collateral)
    pck_crl, root_crl = bytes.fromhex(document["pck_crl"]), bytes.fromhex(document["root_ca_crl"])
    platform_ca, root = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)[1:]
    x509_load.load_der_crl(pck_crl, "pck_crl", CollateralError)
    assert pki.crl_signed_by(pck_crl, platform_ca)
    issuers = x509_load.crl_facts.cache_info()
    assert (issuers.hits, issuers.misses) == (1, 1)
    # the root CRL: read afresh, and not taken for the platform CA's
    assert not pki.crl_signed_by(root_crl, platform_ca)
    assert pki.crl_signed_by(root_crl, root)
    assert x509_load.crl_facts.cache_info().misses == 2


def test_a_crl_that_cannot_be_read_is_refused_every_time() -> None:
    for _ in (1, 2):
        with pytest.raises(CollateralError, match="not a well-formed DER CRL"):
            x509_load.load_der_crl(b"\x30\x03\x02\x01\x00", "pck_crl", CollateralError)
        with pytest.raises(der.DerError):
            x509_load.crl_facts(b"\x30\x03\x02\x01\x00")
    assert x509_load.crl_facts.cache_info().currsize == 0


# -- the PCK extension: known OIDs by their encoding, any other still decoded ---------------


def sample_extension(sgx_quote: bytes) -> tuple[bytes, list[bytes]]:
    """The real PCK extension's value, and its (OID, value) entries encoded."""
    leaf = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)[0]
    value = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(value.value, x509.UnrecognizedExtension)
    raw = value.value.value
    return raw, [entry.encoded() for entry in read_single(raw).children()]


def entry(oid_tlv: bytes, value: bytes) -> bytes:
    return der.encode_sequence(oid_tlv, value)


def test_an_unknown_oid_is_still_decoded_and_checked(sgx_quote: bytes) -> None:
    raw, entries = sample_extension(sgx_quote)
    expected = parse_pck_extension_value(raw)
    unknown = entry(der.encode_oid("1.2.840.113741.1.13.1.99"), der.encode_int(1))
    assert parse_pck_extension_value(der.encode_sequence(*entries, unknown)) == expected
    # a non-minimal arc (0x80 padding) would decode to a known OID if read leniently
    non_minimal = der.encode_tlv(der.TAG_OID, bytes.fromhex("2a864886f84d010d01") + b"\x80\x04")
    with pytest.raises(PckExtensionError, match="non-minimal"):
        parse_pck_extension_value(
            der.encode_sequence(*entries, entry(non_minimal, der.encode_int(1)))
        )
    with pytest.raises(PckExtensionError, match="appears twice"):
        parse_pck_extension_value(der.encode_sequence(*entries, unknown, unknown))


def test_a_known_oid_twice_is_refused_naming_it(sgx_quote: bytes) -> None:
    _, entries = sample_extension(sgx_quote)
    with pytest.raises(PckExtensionError, match="appears twice") as twice:
        parse_pck_extension_value(der.encode_sequence(*entries, entries[-1]))
    assert twice.value.field.startswith(SGX_EXTENSION_OID + ".")


def test_pck_extension_parsing_matches_the_whole_certificate(sgx_quote: bytes) -> None:
    raw, _ = sample_extension(sgx_quote)
    leaf = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)[0]
    assert parse_pck_extension(leaf) == parse_pck_extension_value(bytearray(raw))


# -- well-formed TCB levels read directly ----------------------------------------------------


def field_by_field(level: Any) -> collateral_module.TcbLevel:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collateral_module, "_well_formed_v3_level", lambda _value: None)
        return collateral_module._tcb_level(level, "tcb_info.tcbLevels[0]", 3)


@pytest.fixture(scope="module")
def levels(sgx_collateral: bytes, tdx_collateral: bytes) -> list[Any]:
    """The real SGX and TDX TCB info's levels (the TDX ones with tdxtcbcomponents)."""
    return [
        level
        for document in (sgx_collateral, tdx_collateral)
        for level in json.loads(json.loads(document)["tcb_info"])["tcbLevels"]
    ]


def test_real_levels_are_read_directly_and_alike(levels: list[Any]) -> None:
    for level in levels:
        direct = collateral_module._well_formed_v3_level(level)
        assert direct is not None
        assert direct == field_by_field(level)


@FUZZ
@given(data=st.data())
def test_the_direct_reader_accepts_exactly_what_the_field_reader_does(
    levels: list[Any], data: st.DataObject
) -> None:
    level = data.draw(st.sampled_from(levels).flatmap(tree_mutated))
    direct = collateral_module._well_formed_v3_level(level)
    try:
        expected = field_by_field(level)
    except CollateralError:
        assert direct is None
    else:
        assert direct == expected


# -- typed TCB info and QE identity, built once per distinct JSON text ----------------------


def with_crl_number_changed(collateral: bytes) -> bytes:
    """The same collateral with another root CA CRL text (as after a daily CRL refresh): here
    an upper-case hex spelling of the same bytes, so that it still verifies."""
    document = json.loads(collateral)
    document["root_ca_crl"] = document["root_ca_crl"].upper()
    return json.dumps(document).encode()


def test_a_tcb_info_text_seen_before_is_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch, sgx_collateral: bytes
) -> None:
    parses = Calls(monkeypatch, collateral_module, "parse_tcb_info")
    first = Collateral.from_json(sgx_collateral)
    refreshed = Collateral.from_json(with_crl_number_changed(sgx_collateral))
    assert refreshed is not first and refreshed.sha256 != first.sha256
    assert refreshed.tcb_info is first.tcb_info and refreshed.qe_identity is first.qe_identity
    assert parses.count == 1
    # another text is parsed afresh, and a refused one is refused every time
    document = json.loads(sgx_collateral)
    info = json.loads(document["tcb_info"])
    info["tcbType"] = 1
    document["tcb_info"] = json.dumps(info)
    for _ in (1, 2):
        with pytest.raises(CollateralError, match="unsupported TCB type 1"):
            Collateral.from_json(json.dumps(document))
    assert parses.count == 3
