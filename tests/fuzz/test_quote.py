"""Quotes v3 (SGX), v4 and v5 (TDX): any bytes parse or raise the library's own error,
within bounded memory; the verifier turns any mutated real quote into its own error too."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from fuzzing.targets import quote_seeds, real_collateral
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import (
    SGX_REPORT_SIZE,
    TD_REPORT_SIZE,
    parse_quote,
    pck_certificates,
)
from teaclave_ma.attestation.verifier import verify_quote
from tests.attestation.conftest import SAMPLE_TIME
from tests.fuzz.mutations import (
    FUZZ,
    mutated,
    parses_or_refuses,
    parses_or_refuses_bounded,
)

HEADER_FIELDS = ((0, 2), (2, 2), (4, 4), (8, 2), (10, 2))  # version, key type, TEE, QE/PCE SVN


def integer_fields(quote: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every type and length field of a valid quote, found by walking
    its layout: the places where one changed value moves every later field."""
    fields = list(HEADER_FIELDS)
    version = int.from_bytes(quote[0:2], "little")
    tdx = quote[4] == 0x81
    position = 48
    if version == 5:
        fields += [(48, 2), (50, 4)]  # body descriptor: type, size
        position += 6 + int.from_bytes(quote[50:54], "little")
    else:
        position += TD_REPORT_SIZE if tdx else SGX_REPORT_SIZE
    fields.append((position, 4))  # signature_data_length
    certification = position + 4 + 128  # after the quote signature and attestation key
    if version != 3:
        fields += [(certification, 2), (certification + 2, 4)]  # outer type 6, its size
        certification += 6
    auth_size = certification + SGX_REPORT_SIZE + 64
    auth_length = int.from_bytes(quote[auth_size : auth_size + 2], "little")
    chain = auth_size + 2 + auth_length
    return [*fields, (auth_size, 2), (chain, 2), (chain + 2, 4)]


def quote_samples() -> Sequence[bytes]:
    return list(quote_seeds().values())


def structured_quotes() -> st.SearchStrategy[bytes]:
    return st.sampled_from(quote_samples()).flatmap(
        lambda quote: mutated(quote, integer_fields(quote))
    )


def test_integer_fields_point_at_the_fields_the_parser_reads() -> None:
    """The strategy is only structure-aware if its offsets are right: each valid sample's
    certification data size is where the PEM chain's length is, and the chain follows it."""
    for quote in quote_samples():
        offset, width = integer_fields(quote)[-1]
        size = int.from_bytes(quote[offset : offset + width], "little")
        chain = parse_quote(quote).certification.pck_chain_pem
        assert size == len(chain)
        assert quote[offset + width : offset + width + size] == chain


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    parses_or_refuses_bounded(parse_quote, data)


@FUZZ
@given(st.deferred(structured_quotes))
def test_mutated_quotes_of_every_version(data: bytes) -> None:
    parses_or_refuses_bounded(parse_quote, data)


@FUZZ
@given(st.deferred(structured_quotes))
def test_pck_chain_of_mutated_quotes(data: bytes) -> None:
    parses_or_refuses(
        lambda raw: pck_certificates(parse_quote(raw).certification.pck_chain_pem), data
    )


@FUZZ
@given(data=st.data())
def test_verifier_on_mutated_real_quotes(data: st.DataObject) -> None:
    """Not just the parser: every check must turn bad input into the library's own error."""
    name = data.draw(st.sampled_from(["sgx", "tdx"]))
    quote = quote_seeds()[f"{name}-v{3 if name == 'sgx' else 4}"]
    collateral = real_collateral()[name.upper()]
    changed = data.draw(mutated(quote, integer_fields(quote)))
    parses_or_refuses(
        lambda raw: verify_quote(raw, collateral, SAMPLE_TIME, VerificationPolicy.permissive_tcb()),
        changed,
    )
