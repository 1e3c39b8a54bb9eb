from __future__ import annotations

import struct

import dcap_qvl
import pytest

from teaclave_ma.attestation.errors import PckExtensionError, QuoteFormatError
from teaclave_ma.attestation.pck_extension import parse_pck_extension, parse_pck_extension_value
from teaclave_ma.attestation.quote import (
    SgxReportBody,
    TdReportBody,
    parse_quote,
    parse_sgx_report_body,
    pck_certificates,
)
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.formats import der
from teaclave_ma.identity import SgxIdentity


def test_sgx_v3_sample_matches_an_independent_parser(sgx_quote: bytes) -> None:
    quote = parse_quote(sgx_quote)
    oracle = dcap_qvl.parse_quote(sgx_quote)
    body = quote.body
    assert isinstance(body, SgxReportBody)
    assert quote.header.version == oracle.header.version == 3
    assert quote.tee == "SGX"
    report = oracle.report.as_sgx() if hasattr(oracle.report, "as_sgx") else oracle.report
    assert body.mr_enclave == bytes(report.mr_enclave)
    assert body.mr_signer == bytes(report.mr_signer)
    assert body.report_data == bytes(report.report_data)
    assert body.report_data.startswith(b"Hello, world!")
    assert body.cpu_svn == bytes(report.cpu_svn)
    assert body.attributes == bytes(report.attributes)
    assert not body.debug
    assert quote.header.qe_svn == oracle.header.qe_svn
    assert quote.header.pce_svn == oracle.header.pce_svn
    assert len(pck_certificates(quote.certification.pck_chain_pem)) == 3


def test_tdx_v4_sample_matches_an_independent_parser(tdx_quote: bytes) -> None:
    quote = parse_quote(tdx_quote)
    oracle = dcap_qvl.parse_quote(tdx_quote)
    body = quote.body
    assert isinstance(body, TdReportBody)
    assert quote.header.version == 4
    assert quote.tee == "TDX"
    report = oracle.report.as_td10() if hasattr(oracle.report, "as_td10") else oracle.report
    assert body.mr_td == bytes(report.mr_td)
    assert body.rtmr0 == bytes(report.rt_mr0)
    assert body.rtmr3 == bytes(report.rt_mr3)
    assert body.report_data == bytes(report.report_data)
    assert quote.certification.certification_data_type == 5


@pytest.mark.parametrize("sample", ["sgx", "tdx"])
def test_pck_extension_matches_an_independent_parser(
    sample: str, request: pytest.FixtureRequest
) -> None:
    quote = parse_quote(request.getfixturevalue(f"{sample}_quote"))
    pem = quote.certification.pck_chain_pem.rstrip(b"\0")
    leaf_pem = pem[: pem.index(b"-----END CERTIFICATE-----") + 25]
    oracle = dcap_qvl.parse_pck_extension_from_pem(leaf_pem)
    extension = parse_pck_extension(pck_certificates(quote.certification.pck_chain_pem)[0])
    assert extension.fmspc == bytes(oracle.fmspc)
    assert extension.pce_id == bytes(oracle.pce_id)
    assert extension.pce_svn == oracle.pce_svn
    assert extension.cpu_svn == bytes(oracle.cpu_svn)
    assert extension.ppid == bytes(oracle.ppid)
    assert extension.sgx_type == oracle.sgx_type
    assert list(extension.tcb_components) == list(bytes(oracle.cpu_svn))


def test_every_truncation_is_a_typed_error_naming_an_offset(sgx_quote: bytes) -> None:
    # Every prefix up to the end of the fixed-size part, and a sample of longer ones.
    lengths = list(range(0, 1100)) + list(range(1100, len(sgx_quote), 97))
    for length in lengths:
        with pytest.raises(QuoteFormatError) as caught:
            parse_quote(sgx_quote[:length])
        assert "offset" in str(caught.value) or "bytes" in str(caught.value)


def test_a_report_body_of_the_wrong_size_is_named() -> None:
    with pytest.raises(QuoteFormatError) as caught:
        parse_sgx_report_body(bytes(383), "qe_report", base=500)
    assert caught.value.field == "qe_report"
    assert "384 bytes, got 383 at offset 500" in str(caught.value)


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (0, struct.pack("<H", 9), "header.version"),
        (2, struct.pack("<H", 3), "header.attestation_key_type"),
        (4, struct.pack("<I", 0x81), "header.tee_type"),
    ],
)
def test_header_fields_are_checked(sgx_quote: bytes, offset: int, value: bytes, field: str) -> None:
    mutated = sgx_quote[:offset] + value + sgx_quote[offset + len(value) :]
    with pytest.raises(QuoteFormatError) as caught:
        parse_quote(mutated)
    assert caught.value.field == field


def test_unsupported_certification_data_type_is_named(sgx_quote: bytes) -> None:
    quote = parse_quote(sgx_quote)
    # certification data type sits right after the QE auth data.
    at = 48 + 384 + 4 + 64 + 64 + 384 + 64 + 2 + len(quote.certification.qe_auth_data)
    mutated = sgx_quote[:at] + struct.pack("<H", 3) + sgx_quote[at + 2 :]
    with pytest.raises(QuoteFormatError, match="unsupported certification data type 3"):
        parse_quote(mutated)


def test_trailing_garbage_is_refused_but_zero_padding_is_not(sgx_quote: bytes) -> None:
    assert parse_quote(sgx_quote + bytes(64)).raw == sgx_quote + bytes(64)
    with pytest.raises(QuoteFormatError, match="not zero padding"):
        parse_quote(sgx_quote + b"\x01")


def test_garbled_pck_chain_is_a_typed_error(sgx_quote: bytes) -> None:
    quote = parse_quote(sgx_quote)
    with pytest.raises(QuoteFormatError, match="PEM"):
        pck_certificates(quote.certification.pck_chain_pem.replace(b"MII", b"XXX"))


def _entry(oid: str, value: bytes) -> bytes:
    return der.encode_sequence(der.encode_oid(oid), value)


def test_pck_extension_errors_name_the_oid() -> None:
    base = "1.2.840.113741.1.13.1"
    ppid = _entry(base + ".1", der.encode_tlv(der.TAG_OCTET_STRING, bytes(16)))
    with pytest.raises(PckExtensionError) as missing:
        parse_pck_extension_value(der.encode_sequence(ppid))
    assert missing.value.field == base + ".2"
    with pytest.raises(PckExtensionError, match="appears twice"):
        parse_pck_extension_value(der.encode_sequence(ppid, ppid))
    with pytest.raises(PckExtensionError):
        parse_pck_extension_value(b"\x30\x85garbage")


def test_v5_quote_with_a_td15_body() -> None:
    platform = SimulatedPlatform.create()
    identity = simulated_td_identity(SgxIdentity(b"\x01" * 32, b"\x02" * 32, 1, 1, False))
    raw = platform.td_quote(identity, bytes(range(64)), v5=True)
    quote = parse_quote(raw)
    oracle = dcap_qvl.parse_quote(raw)
    assert (quote.header.version, oracle.header.version) == (5, 5)
    body = quote.body
    assert isinstance(body, TdReportBody)
    assert body.identity() == identity
    assert body.tee_tcb_svn2 == body.tee_tcb_svn and body.mr_service_td == bytes(48)
    assert quote.signed_bytes == raw[: 48 + 6 + 648]  # the descriptor is signed too
    with pytest.raises(QuoteFormatError, match="unknown v5 body type 9"):
        parse_quote(raw[:48] + struct.pack("<H", 9) + raw[50:])
    with pytest.raises(QuoteFormatError, match="body type 1 does not fit"):
        parse_quote(raw[:48] + struct.pack("<HI", 1, 384) + raw[54:])
    with pytest.raises(QuoteFormatError, match="is 648 bytes, the quote says 600"):
        parse_quote(raw[:48] + struct.pack("<HI", 3, 600) + raw[54:])
