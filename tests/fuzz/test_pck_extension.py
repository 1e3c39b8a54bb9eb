"""The Intel SGX extension of PCK certificates, and the DER reader under it: any bytes parse
or raise the library's own error, within bounded memory."""

from __future__ import annotations

import functools

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from fuzzing.targets import quote_seeds
from teaclave_ma.attestation.errors import PckExtensionError
from teaclave_ma.attestation.pck_extension import SGX_EXTENSION_OID, parse_pck_extension_value
from teaclave_ma.attestation.quote import parse_quote, pck_certificates
from teaclave_ma.formats import der
from tests.fuzz.mutations import (
    FUZZ,
    der_mutated,
    der_nodes,
    der_replace,
    mutated,
    parses_or_refuses_bounded,
)


@functools.cache
def extension_samples() -> list[bytes]:
    """The extension of the real SGX and TDX samples' PCK certificates and the simulated one."""
    values = []
    for name in ("sgx-v3", "tdx-v4", "sim-v3"):
        pck = pck_certificates(parse_quote(quote_seeds()[name]).certification.pck_chain_pem)[0]
        extension = pck.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
        assert isinstance(extension.value, x509.UnrecognizedExtension)
        values.append(extension.value.value)
    return values


def test_samples_parse() -> None:
    """Mutations start from extensions the parser accepts, so they reach every field."""
    for value in extension_samples():
        assert len(parse_pck_extension_value(value).tcb_components) == 16


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    parses_or_refuses_bounded(parse_pck_extension_value, data)


@FUZZ
@given(st.deferred(lambda: st.sampled_from(extension_samples()).flatmap(mutated)))
def test_byte_mutations(data: bytes) -> None:
    parses_or_refuses_bounded(parse_pck_extension_value, data)


@FUZZ
@given(st.deferred(lambda: st.sampled_from(extension_samples()).flatmap(der_mutated)))
def test_der_tree_mutations(data: bytes) -> None:
    """One field (an OID, an SVN, a nested SEQUENCE) changed with every length kept right."""
    parses_or_refuses_bounded(parse_pck_extension_value, data)


@FUZZ
@given(st.binary(max_size=256))
def test_der_reader_primitives(data: bytes) -> None:
    parses_or_refuses_bounded(lambda raw: der.spans(raw, 0, len(raw), "fuzz"), data)
    parses_or_refuses_bounded(lambda raw: der.decode_oid(raw, "fuzz"), data)
    parses_or_refuses_bounded(lambda raw: der.decode_int(raw, "fuzz"), data)


def test_an_oid_arc_too_large_to_print_is_refused() -> None:
    """Found by fuzzing: a 2,100-byte OID arc made decode_oid raise ValueError from str()
    (Python refuses to print integers past 4,300 digits)."""
    huge_arc = b"\x2a" + b"\xff" * 2100 + b"\x7f"
    with pytest.raises(der.DerError, match="arc longer than 20 bytes"):
        der.decode_oid(huge_arc, "oid")
    value = extension_samples()[0]
    changed = der_replace(value, 2, lambda _oid: der.encode_tlv(der.TAG_OID, huge_arc))
    with pytest.raises(PckExtensionError, match="arc longer than"):
        parse_pck_extension_value(changed)


def test_oid_arcs_must_be_minimal_and_uuid_arcs_still_decode() -> None:
    with pytest.raises(der.DerError, match="non-minimal"):
        der.decode_oid(b"\x2a\x80\x01", "oid")
    uuid_oid = "2.25.329800735698586629295641978511506172918"
    assert der.decode_oid(der.encode_oid(uuid_oid)[2:], "oid") == uuid_oid


def first_svn(extension: bytes) -> int:
    """Pre-order index of the first INTEGER: the first TCB component SVN."""
    return next(i for i, node in enumerate(der_nodes(extension)) if node.tag == der.TAG_INTEGER)


def test_an_integer_too_large_to_print_is_refused() -> None:
    """Found by fuzzing: a 2,001-byte SVN made the range check's message raise ValueError."""
    value = extension_samples()[0]
    huge = der.encode_tlv(der.TAG_INTEGER, b"\x7f" + b"\xff" * 2000)
    with pytest.raises(PckExtensionError, match="2001-byte integer out of range"):
        parse_pck_extension_value(der_replace(value, first_svn(value), lambda _svn: huge))


@pytest.mark.parametrize(
    ("encoded", "accepted"), [(b"\x00\xff\xff", True), (b"\x01\x00\x00", False)]
)
def test_svn_range_edges(encoded: bytes, accepted: bool) -> None:
    value = extension_samples()[0]
    changed = der_replace(
        value, first_svn(value), lambda _svn: der.encode_tlv(der.TAG_INTEGER, encoded)
    )
    if accepted:
        assert parse_pck_extension_value(changed).tcb_components[0] == 0xFFFF
    else:
        with pytest.raises(PckExtensionError, match="out of range"):
            parse_pck_extension_value(changed)
