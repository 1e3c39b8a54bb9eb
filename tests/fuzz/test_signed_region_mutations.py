"""Every single-byte change in a signed region of a real quote is refused, by the check
that guards that region, with the library's own error.

Regions of a DCAP quote and what protects each:
- header and report body: signed by the attestation key (the quote signature);
- attestation key and QE auth data: bound by the QE report's report_data, SHA-256(key || auth);
- QE report: signed by the PCK key (the QE report signature);
- the two signatures themselves.
Verified as of SAMPLE_TIME against the real collateral, so the unchanged quote passes.
"""

from __future__ import annotations

import attrs
import pytest

from fuzzing.targets import real_collateral, real_sample
from teaclave_ma.attestation.errors import (
    PolicyRejected,
    QuoteFormatError,
    QuoteVerificationError,
)
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import SGX_REPORT_SIZE, parse_quote
from teaclave_ma.attestation.verifier import verify_quote
from tests.attestation.conftest import SAMPLE_TIME

PATTERNS = (0x01, 0xFF)  # XOR masks: the lowest bit, and every bit of the byte
SAMPLES = {"SGX": "sgx/quote.bin", "TDX": "tdx/quote.bin"}
POLICY = VerificationPolicy.permissive_tcb()


@attrs.frozen
class Region:
    name: str
    start: int
    end: int
    check: str  # the QuoteVerificationError.check that must refuse a change here
    format_error_allowed: bool = False  # header fields the parser itself refuses


def signed_regions(quote: bytes) -> list[Region]:
    """Where each region lies, found by walking the layout of the parsed quote."""
    parsed = parse_quote(quote)
    signed_end = len(parsed.signed_bytes)
    signature = signed_end + 4  # after signature_data_length
    certification = signature + 128 + (6 if parsed.header.version != 3 else 0)
    qe_signature = certification + SGX_REPORT_SIZE
    auth = qe_signature + 64 + 2
    regions = [
        Region("header", 0, 48, "quote_signature", format_error_allowed=True),
        Region("report body", 48, signed_end, "quote_signature"),
        Region("quote signature", signature, signature + 64, "quote_signature"),
        Region("attestation key", signature + 64, signature + 128, "qe_report_data"),
        Region("QE report", certification, qe_signature, "qe_report_signature"),
        Region("QE report signature", qe_signature, qe_signature + 64, "qe_report_signature"),
        Region(
            "QE auth data", auth, auth + len(parsed.certification.qe_auth_data), "qe_report_data"
        ),
    ]
    # The walk must land on the parsed fields, or the test would mutate the wrong bytes.
    fields = {
        "quote signature": parsed.quote_signature,
        "attestation key": parsed.attestation_key,
        "QE report": parsed.certification.qe_report.raw,
        "QE report signature": parsed.certification.qe_report_signature,
        "QE auth data": parsed.certification.qe_auth_data,
    }
    for region in regions:
        if region.name in fields:
            assert quote[region.start : region.end] == fields[region.name], region.name
    return regions


def refusal(quote: bytes, tee: str) -> Exception | None:
    try:
        verify_quote(quote, real_collateral()[tee], SAMPLE_TIME, POLICY)
    except (QuoteFormatError, QuoteVerificationError) as exc:
        return exc
    return None


@pytest.mark.parametrize("tee", sorted(SAMPLES))
def test_the_unchanged_sample_verifies(tee: str) -> None:
    quote = real_sample(SAMPLES[tee])
    assert refusal(quote, tee) is None
    assert sum(r.end - r.start for r in signed_regions(quote)) > 900


@pytest.mark.parametrize(
    ("tee", "region_index"), [(tee, index) for tee in sorted(SAMPLES) for index in range(7)]
)
def test_every_byte_change_in_a_signed_region_is_refused(tee: str, region_index: int) -> None:
    quote = real_sample(SAMPLES[tee])
    region = signed_regions(quote)[region_index]
    accepted, misattributed = [], []
    for offset in range(region.start, region.end):
        for mask in PATTERNS:
            changed = bytearray(quote)
            changed[offset] ^= mask
            error = refusal(bytes(changed), tee)
            if error is None:
                accepted.append((offset, mask))
            elif isinstance(error, PolicyRejected) or not (
                (isinstance(error, QuoteVerificationError) and error.check == region.check)
                or (isinstance(error, QuoteFormatError) and region.format_error_allowed)
            ):
                misattributed.append((offset, mask, repr(error)))
    assert not accepted, f"{tee} {region.name}: changes accepted at (offset, xor) {accepted[:10]}"
    assert not misattributed, f"{tee} {region.name}: refused by the wrong check {misattributed[:5]}"
