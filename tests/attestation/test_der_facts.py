"""The chain checks read certificates and CRLs with the project's DER reader (signed bytes,
signature, algorithm, names as bytes) instead of cryptography's objects. Certificates and
CRLs are loaded by cryptography first (what it refuses never reaches the reader); on what
both accept the reader must agree with cryptography's own parse field by field. Signatures
are then checked on those raw TBS bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from teaclave_ma.attestation import pki, x509_load
from teaclave_ma.attestation.quote import parse_quote, pck_certificates
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.formats import der
from tests.attestation.test_verify import IDENTITY, REPORT_DATA
from tests.fuzz.mutations import FUZZ, der_mutated, der_replace

DER = serialization.Encoding.DER
# cryptography warns of out-of-range attribute lengths in mutated names; not a failure.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def certificates_of(quote: bytes, collateral: bytes) -> list[bytes]:
    chains = [parse_quote(quote).certification.pck_chain_pem.rstrip(b"\0")]
    document = json.loads(collateral)
    chains += [
        document["pck_crl_issuer_chain"].encode(),
        document["tcb_info_issuer_chain"].encode(),
    ]
    return list(
        dict.fromkeys(
            certificate.public_bytes(DER)
            for chain in chains
            for certificate in x509.load_pem_x509_certificates(chain)
        )
    )


def crls_of(collateral: bytes) -> list[bytes]:
    document = json.loads(collateral)
    return [bytes.fromhex(document["root_ca_crl"]), bytes.fromhex(document["pck_crl"])]


@pytest.fixture(scope="module")
def samples(
    sgx_quote: bytes, sgx_collateral: bytes, tdx_quote: bytes, tdx_collateral: bytes
) -> dict[str, list[bytes]]:
    platform = SimulatedPlatform.create()
    simulated = (platform.quote(IDENTITY, REPORT_DATA), platform.collateral_json())
    evidence = [(sgx_quote, sgx_collateral), (tdx_quote, tdx_collateral), simulated]
    return {
        "certificates": list(dict.fromkeys(c for pair in evidence for c in certificates_of(*pair))),
        "crls": [crl for _, collateral in evidence for crl in crls_of(collateral)],
    }


def name_view(name: x509.Name) -> tuple[object, ...]:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    attributes = tuple((attribute.oid.dotted_string, attribute.value) for attribute in name)
    return name.public_bytes(), attributes, cns[0].value if cns else None


def facts_view(facts: x509_load.NameFacts) -> tuple[object, ...]:
    return facts.encoded, facts.attributes, facts.common_name


def signed_view(signed: x509_load.SignedFacts, *names: x509_load.NameFacts) -> tuple[object, ...]:
    algorithm = der.decode_oid(signed.signature_algorithm, "test")
    return signed.tbs, signed.signature, algorithm, *map(facts_view, (signed.issuer, *names))


def read_alike(
    data: bytes, cryptographys: Callable[[bytes], tuple[object, ...]],
    ours: Callable[[bytes], tuple[object, ...]],
) -> None:  # fmt: skip
    """``data``, if cryptography reads it, is read alike by both or refused by the DER
    reader; never read differently."""
    try:
        expected = cryptographys(data)
    except x509_load._MALFORMED:
        return  # refused at load, before any facts are read
    try:
        got = ours(data)
    except der.DerError:
        return  # stricter than cryptography (say, a TBS algorithm unlike the outer one)
    assert got == expected


def certificate_by_cryptography(data: bytes) -> tuple[object, ...]:
    certificate = x509.load_der_x509_certificate(data)
    return (
        certificate.tbs_certificate_bytes,
        certificate.signature,
        certificate.signature_algorithm_oid.dotted_string,
        name_view(certificate.issuer),
        name_view(certificate.subject),
    )


def certificate_by_reader(data: bytes) -> tuple[object, ...]:
    facts = x509_load.read_certificate_facts(data)
    assert facts.signed.encoded == data
    return signed_view(facts.signed, facts.subject)


def crl_by_cryptography(data: bytes) -> tuple[object, ...]:
    crl = x509.load_der_x509_crl(data)
    return (
        crl.tbs_certlist_bytes,
        crl.signature,
        crl.signature_algorithm_oid.dotted_string,
        name_view(crl.issuer),
    )


def certificate_agrees(data: bytes) -> None:
    read_alike(data, certificate_by_cryptography, certificate_by_reader)


def crl_agrees(data: bytes) -> None:
    read_alike(data, crl_by_cryptography, lambda crl: signed_view(x509_load.read_crl_facts(crl)))


def test_every_sample_is_read_as_cryptography_reads_it(samples: dict[str, list[Any]]) -> None:
    for data in samples["certificates"]:
        x509_load.read_certificate_facts(data)  # accepted, not merely agreed on
        certificate_agrees(data)
    for data in samples["crls"]:
        x509_load.read_crl_facts(data)
        crl_agrees(data)


@FUZZ
@given(data=st.data())
def test_mutated_certificates_are_read_alike_or_refused(
    samples: dict[str, list[bytes]], data: st.DataObject
) -> None:
    certificate_agrees(data.draw(st.sampled_from(samples["certificates"]).flatmap(der_mutated)))


@FUZZ
@given(data=st.data())
def test_mutated_crls_are_read_alike_or_refused(
    samples: dict[str, list[bytes]], data: st.DataObject
) -> None:
    crl_agrees(data.draw(st.sampled_from(samples["crls"]).flatmap(der_mutated)))


# -- the chain checks on those facts --------------------------------------------------------


def reencoded(data: bytes, index: int, value: bytes) -> bytes:
    """``data`` with its ``index``-th TLV (pre-order) given ``value``, lengths re-encoded."""
    return der_replace(data, index, lambda item: der.encode_tlv(item.tag, value))


def test_a_tbs_algorithm_unlike_the_outer_one_is_refused(samples: dict[str, list[bytes]]) -> None:
    data = samples["certificates"][0]
    # pre-order: 0 Certificate, 1 TBS, 2 [0] version, 3 its INTEGER, 4 serial, 5 TBS algorithm
    # SEQUENCE, 6 its OID: ecdsa-with-SHA384 there, the outer one left as SHA-256
    changed = reencoded(data, 6, der.encode_oid("1.2.840.10045.4.3.3")[2:])
    with pytest.raises(der.DerError, match="TBS signature algorithm differs"):
        x509_load.read_certificate_facts(changed)


def test_a_name_with_a_bad_string_is_refused_naming_it() -> None:
    common_name = der.encode_tlv(0x13, b"bad*name")  # '*' is not PrintableString
    attribute = der.encode_sequence(der.encode_oid("2.5.4.3"), common_name)
    name = der.encode_sequence(der.encode_tlv(0x31, attribute))
    with pytest.raises(der.DerError, match="PrintableString"):
        x509_load._name(name, der.single_span(name, "test"), "certificate subject")
    with pytest.raises(der.DerError, match="empty relative distinguished name"):
        empty = der.encode_sequence(der.encode_tlv(0x31, b""))
        x509_load._name(empty, der.single_span(empty, "test"), "certificate subject")


def test_an_issuer_is_matched_by_its_name_bytes_and_key(sgx_quote: bytes) -> None:
    leaf, ca, root = pck_certificates(parse_quote(sgx_quote).certification.pck_chain_pem)
    assert pki.signed_by(leaf, ca) and pki.signed_by(ca, root)
    # The right key but another name, and the right name but another key, are both refused.
    facts = x509_load.certificate_facts(leaf).signed
    root_subject = x509_load.certificate_facts(root).subject
    assert not pki._signed_by_key(facts, ca, root_subject)
    assert not pki.signed_by(leaf, root)
    # A signature algorithm other than ecdsa-with-SHA256 is refused, not tried.
    other = x509_load.SignedFacts(
        facts.encoded, facts.tbs, der.encode_oid("1.2.840.10045.4.3.3")[2:], facts.signature,
        facts.issuer,
    )  # fmt: skip
    assert not pki._signed_by_key(other, ca, x509_load.certificate_facts(ca).subject)
