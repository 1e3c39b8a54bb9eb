"""RA-TLS certificates and their evidence extensions (teaclave_ma/transport/evidence.py):
the whole certificate DER, the legacy quote extension and the TCG tagged-evidence CBOR.
Any input parses or raises the library's own error, within bounded memory."""

from __future__ import annotations

import functools
import hashlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing.targets import (
    CertificateMode,
    certificate_seeds,
    gramine_certificate_der,
    harness_certificate,
)
from teaclave_ma.attestation.quote import Quote
from teaclave_ma.formats import der
from teaclave_ma.transport.errors import CertificateFormatError
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    PUBKEY_HASH_CLAIM,
    TCG_EVIDENCE_OID,
    TCG_EVIDENCE_TAG,
    bound_quote,
    extract_evidence,
)
from tests.fuzz.mutations import (
    FUZZ,
    VALUES,
    der_mutated,
    der_nodes,
    der_replace,
    mutated,
    parses_or_refuses,
    parses_or_refuses_bounded,
)


def evidence_of(certificate: bytes) -> Quote:
    """Everything a peer's certificate goes through before its quote is verified."""
    return bound_quote(extract_evidence(certificate))


@functools.cache
def seeds_of(mode: CertificateMode) -> list[bytes]:
    return [seed[1:] for seed in certificate_seeds().values() if seed[0] == mode]


def whole_certificates() -> st.SearchStrategy[bytes]:
    return st.sampled_from(seeds_of(CertificateMode.DER))


@FUZZ
@given(st.binary(max_size=1024))
def test_random_bytes(data: bytes) -> None:
    parses_or_refuses_bounded(evidence_of, data)


@FUZZ
@given(st.deferred(lambda: whole_certificates().flatmap(mutated)))
def test_byte_mutations_of_whole_certificates(data: bytes) -> None:
    parses_or_refuses_bounded(evidence_of, data)


@FUZZ
@given(
    st.deferred(
        lambda: st.sampled_from([gramine_certificate_der(), seeds_of(CertificateMode.DER)[-1]])
    ).flatmap(der_mutated)
)
def test_der_tree_mutations_of_whole_certificates(data: bytes) -> None:
    """Lengths stay consistent, so the extension loop sees changed OIDs, values, counts."""
    parses_or_refuses_bounded(evidence_of, data)


@FUZZ
@given(
    st.deferred(lambda: st.sampled_from(seeds_of(CertificateMode.LEGACY_QUOTE)).flatmap(mutated))
)
def test_legacy_quote_extension(quote: bytes) -> None:
    """A correctly self-signed certificate whose legacy extension holds a changed quote."""
    parses_or_refuses(evidence_of, harness_certificate(LEGACY_QUOTE_OID, quote))


@FUZZ
@given(
    st.deferred(lambda: st.sampled_from(seeds_of(CertificateMode.TCG_EVIDENCE)).flatmap(mutated))
)
def test_tcg_evidence_byte_mutations(evidence: bytes) -> None:
    parses_or_refuses_bounded(evidence_of, harness_certificate(TCG_EVIDENCE_OID, evidence))


def _claims(hash_alg: object, digest: object, key: str, wrap: bool) -> bytes:
    inner: object = [hash_alg, digest]
    return cbor2.dumps({key: cbor2.dumps(inner) if wrap else inner})


TCG_STRUCTURES = st.builds(
    lambda tag, quote, claims, extra: cbor2.dumps(
        cbor2.CBORTag(tag, [quote, claims, *extra] if extra else [quote, claims])
    ),
    st.sampled_from([TCG_EVIDENCE_TAG, 60001, 24]),
    st.sampled_from([b"", b"\x03\x00\x02\x00"]) | st.binary(max_size=64),
    st.builds(
        _claims,
        st.sampled_from([1, 0, -1, 2**64, "1", None]) | VALUES,
        st.sampled_from([hashlib.sha256(b"").digest(), b""]) | VALUES,
        st.sampled_from([PUBKEY_HASH_CLAIM, "pubkey", ""]),
        st.booleans(),
    )
    | st.binary(max_size=64),
    st.lists(VALUES, max_size=1),
) | st.builds(lambda value: cbor2.dumps(cbor2.CBORTag(TCG_EVIDENCE_TAG, value)), VALUES)


@FUZZ
@given(TCG_STRUCTURES)
def test_tcg_evidence_structures(evidence: bytes) -> None:
    """CBOR that is well-formed but of every wrong shape: other tags, non-bstr members,
    claims that are not a map, hash algorithms and digests of every type."""
    parses_or_refuses_bounded(evidence_of, harness_certificate(TCG_EVIDENCE_OID, evidence))


@pytest.mark.parametrize(
    "header",
    [
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # bstr of 2**64-1 bytes
        b"\x9b\x00\x00\x00\x00\xff\xff\xff\xff",  # array of 2**32-1 items
        b"\xd9\xea\x60" * 2000,  # tag 60000 nested 2000 deep
        b"\x81" * 5000,  # arrays nested 5000 deep
    ],
)
def test_cbor_that_claims_more_than_it_holds(header: bytes) -> None:
    """Length fields are not trusted: nothing is allocated for what is not there."""
    parses_or_refuses_bounded(evidence_of, harness_certificate(TCG_EVIDENCE_OID, header))


def test_an_extension_oid_too_large_to_print_is_refused() -> None:
    """Found by fuzzing: an extension OID with a 2,100-byte arc raised ValueError (from
    str() of a 4,300-digit integer) out of extract_evidence, not the library's own error."""
    certificate = gramine_certificate_der()
    extensions = next(i for i, node in enumerate(der_nodes(certificate)) if node.tag == 0xA3)
    huge_oid = der.encode_tlv(der.TAG_OID, b"\x2a" + b"\xff" * 2100 + b"\x7f")
    # [3] -> SEQUENCE OF -> the first extension's SEQUENCE -> its OID
    changed = der_replace(certificate, extensions + 3, lambda _oid: huge_oid)
    with pytest.raises(CertificateFormatError, match="arc longer than"):
        extract_evidence(changed)


@pytest.mark.parametrize("mode", [CertificateMode.LEGACY_QUOTE, CertificateMode.TCG_EVIDENCE])
def test_extension_seeds_bind_the_harness_key(mode: CertificateMode) -> None:
    """Mutations start from evidence that passes every check, so they reach each one."""
    for value in seeds_of(mode):
        oid = LEGACY_QUOTE_OID if mode == CertificateMode.LEGACY_QUOTE else TCG_EVIDENCE_OID
        assert evidence_of(harness_certificate(oid, value))
