"""Any input to a parser yields a value or the library's own error, nothing else."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pck_extension import parse_pck_extension_value
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.attestation.verifier import verify_quote
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.transport.evidence import bound_quote, extract_evidence
from tests.attestation.conftest import SAMPLE_TIME

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def accepts_or_refuses(parser: object, data: object) -> None:
    with contextlib.suppress(TeaclaveMAError):
        parser(data)  # type: ignore[operator]


@SETTINGS
@given(st.binary(max_size=2048))
def test_quote_parser_on_random_bytes(data: bytes) -> None:
    accepts_or_refuses(parse_quote, data)


@SETTINGS
@given(st.data())
def test_quote_parser_on_mutated_real_quotes(sgx_quote: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(sgx_quote) - 1))
    value = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(position, len(sgx_quote)))
    mutated = sgx_quote[:position] + bytes([value]) + sgx_quote[position + 1 : cut]
    accepts_or_refuses(parse_quote, mutated)


@SETTINGS
@given(st.binary(max_size=512))
def test_pck_extension_parser_on_random_bytes(data: bytes) -> None:
    accepts_or_refuses(parse_pck_extension_value, data)


@SETTINGS
@given(st.binary(max_size=1024))
def test_certificate_parser_on_random_bytes(data: bytes) -> None:
    accepts_or_refuses(extract_evidence, data)


@SETTINGS
@given(st.data())
def test_collateral_parser_on_mutated_json(sgx_collateral: bytes, data: st.DataObject) -> None:
    document = json.loads(sgx_collateral)
    field = data.draw(st.sampled_from(sorted(document)))
    value = document[field]
    position = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    document[field] = value[:position] + replacement + value[position + 1 :]
    accepts_or_refuses(Collateral.from_json, json.dumps(document))


@SETTINGS
@given(st.data())
def test_verifier_on_mutated_real_quotes(
    sgx_quote: bytes, sgx_collateral: bytes, data: st.DataObject
) -> None:
    """Not just the parser: every check must turn bad input into the library's own error."""
    collateral = Collateral.from_json(sgx_collateral)
    position = data.draw(st.integers(0, len(sgx_quote) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = sgx_quote[:position] + bytes([value]) + sgx_quote[position + 1 :]
    accepts_or_refuses(
        lambda quote: verify_quote(
            quote, collateral, SAMPLE_TIME, VerificationPolicy.permissive_tcb()
        ),
        mutated,
    )


@SETTINGS
@given(st.data())
def test_certificate_parser_on_mutated_gramine_certificate(
    shared_data: Path, data: st.DataObject
) -> None:
    certificate = (shared_data / "ratls" / "gramine-cert.pem").read_bytes()
    der = base64.b64decode(
        b"".join(line for line in certificate.splitlines() if not line.startswith(b"-----"))
    )
    position = data.draw(st.integers(0, len(der) - 1))
    mutated = der[:position] + bytes([data.draw(st.integers(0, 255))]) + der[position + 1 :]
    accepts_or_refuses(lambda cert: bound_quote(extract_evidence(cert)), mutated)
