"""The verifier's caches: a repeat skips the work, other or tampered bytes are checked afresh
and refused, a failure is never remembered as a success, and what a cache covers is still
checked against the time and the CRLs on every use."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation import pki, verifier
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.collateral import clear_cache as clear_parsed_collateral
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.quote import parse_quote, pck_certificates
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.verifier import (
    ValidityCache,
    clear_caches,
    collateral_cache,
    pck_chain_cache,
    qe_report_cache,
    verify_quote,
)
from tests.attestation.conftest import SAMPLE_TIME, edit_collateral, reissued_crl
from tests.attestation.test_verify import (
    ANY_STATUS,
    IDENTITY,
    QE_REPORT,
    QE_REPORT_SIGNATURE,
    QUOTE_BODY,
    REPORT_DATA,
    anchor_of,
    flip,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


class Calls:
    """Counts the calls of a verifier step, which still does its work."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.count = 0
        original: Callable[..., Any] = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def verify(
    platform: SimulatedPlatform,
    *,
    quote: bytes | None = None,
    collateral: Collateral | None = None,
    now: dt.datetime = NOW,
) -> verifier.VerifiedQuote:
    return verify_quote(
        quote if quote is not None else platform.quote(IDENTITY, REPORT_DATA),
        collateral or Collateral.from_json(platform.collateral_json()),
        now,
        VerificationPolicy(),
        anchor_of(platform),
    )


# -- verified collateral, keyed by its bytes ---------------------------------------------------


def test_verified_collateral_is_not_checked_again(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify(platform)
    signed_json = Calls(monkeypatch, verifier, "_check_signed_json")
    crls = Calls(monkeypatch, verifier, "verify_crl")
    hits = collateral_cache.hits
    verify(platform)  # a new quote, the same collateral bytes
    assert collateral_cache.hits == hits + 1
    assert signed_json.count == 0
    assert crls.count == 1  # only the PCK CRL under the quote's own PCK CA, per use


def test_other_collateral_bytes_are_checked_afresh(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify(platform)
    signed_json = Calls(monkeypatch, verifier, "_check_signed_json")
    # The same content written differently is other bytes: verified again, and accepted.
    compact = json.dumps(json.loads(platform.collateral_json())).encode()
    verify(platform, collateral=Collateral.from_json(compact))
    assert signed_json.count == 2  # QE identity and TCB info
    assert len(collateral_cache) == 2


def test_tampered_collateral_is_refused_while_the_genuine_one_is_cached(
    platform: SimulatedPlatform,
) -> None:
    verify(platform)
    tampered = edit_collateral(
        platform.collateral_json(),
        lambda d: d.update(tcb_info=d["tcb_info"].replace('"tcbType":0', '"tcbType":0 ')),
    )
    for _attempt in range(2):
        with pytest.raises(QuoteVerificationError) as caught:
            verify(platform, collateral=tampered)
        assert caught.value.check == "tcb_info_signature"
    assert len(collateral_cache) == 1  # the genuine collateral only


def test_collateral_that_failed_is_not_remembered(platform: SimulatedPlatform) -> None:
    collateral = Collateral.from_json(platform.collateral_json())
    expired = NOW + dt.timedelta(days=45)
    for _attempt in range(2):
        with pytest.raises(QuoteVerificationError) as caught:
            verify(platform, collateral=collateral, now=expired)
        assert caught.value.check.endswith("_validity")
    assert len(collateral_cache) == 0


def test_cached_collateral_is_refused_after_its_next_update(platform: SimulatedPlatform) -> None:
    collateral = Collateral.from_json(platform.collateral_json())
    verify(platform, collateral=collateral)
    with pytest.raises(QuoteVerificationError) as caught:
        verify(platform, collateral=collateral, now=NOW + dt.timedelta(days=45))
    assert caught.value.check.endswith("_validity")
    assert len(collateral_cache) == 0  # dropped once past its window
    with pytest.raises(QuoteVerificationError) as early:
        verify(platform, collateral=collateral, now=NOW - dt.timedelta(days=2))
    assert early.value.check.endswith("_validity")


def test_collateral_is_cached_per_trust_anchor(platform: SimulatedPlatform) -> None:
    quote = platform.quote(IDENTITY, REPORT_DATA)
    collateral = Collateral.from_json(platform.collateral_json())
    verify(platform, quote=quote, collateral=collateral)
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote, collateral, NOW, VerificationPolicy())  # Intel's root
    assert caught.value.check == "simulated_root"


def test_a_collateral_object_not_the_one_checked_is_checked_again(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache vouches for the parsed object it checked, not for anything with its digest."""
    collateral = Collateral.from_json(platform.collateral_json())
    verify(platform, collateral=collateral)
    clear_parsed_collateral()
    fresh = Collateral.from_json(platform.collateral_json())
    assert fresh is not collateral and fresh.sha256 == collateral.sha256
    signed_json = Calls(monkeypatch, verifier, "_check_signed_json")
    verify(platform, collateral=fresh)
    assert signed_json.count == 2


# -- verified PCK chains, keyed by their PEM bytes -----------------------------------------------


def test_a_new_quote_from_a_known_platform_reuses_its_verified_chain(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    verify(platform)
    chains = Calls(monkeypatch, verifier, "verify_chain")
    extensions = Calls(monkeypatch, verifier, "parse_pck_extension")
    hits = pck_chain_cache.hits
    result = verify(platform, quote=platform.quote(IDENTITY, b"\x07" * 64))
    assert pck_chain_cache.hits == hits + 1
    assert (chains.count, extensions.count) == (0, 0)
    assert result.report_data == b"\x07" * 64


@pytest.mark.parametrize(
    ("offset", "check"),
    [
        (QUOTE_BODY + 64, "quote_signature"),
        (QUOTE_BODY + 320, "quote_signature"),
        (QE_REPORT + 64, "qe_report_signature"),
    ],
)
def test_the_quote_is_checked_afresh_with_everything_else_cached(
    platform: SimulatedPlatform, offset: int, check: str
) -> None:
    quote = platform.quote(IDENTITY, REPORT_DATA)
    verify(platform, quote=quote)
    with pytest.raises(QuoteVerificationError) as caught:
        verify(platform, quote=flip(quote, offset))
    assert caught.value.check == check
    assert verify(platform, quote=quote).report_data == REPORT_DATA


def test_another_chain_is_checked_afresh_and_refused(platform: SimulatedPlatform) -> None:
    verify(platform)
    stranger = SimulatedPlatform.create()
    with pytest.raises(QuoteVerificationError) as caught:
        verify(platform, quote=stranger.quote(IDENTITY, REPORT_DATA))
    assert caught.value.check == "pck_chain"
    assert len(pck_chain_cache) == 1


def test_a_chain_that_failed_is_not_remembered(platform: SimulatedPlatform) -> None:
    stranger = SimulatedPlatform.create()
    quote = stranger.quote(IDENTITY, REPORT_DATA)
    for _attempt in range(2):
        with pytest.raises(QuoteVerificationError) as caught:
            verify(platform, quote=quote)  # under the wrong root
        assert caught.value.check == "pck_chain"
    assert len(pck_chain_cache) == 0


def test_a_cached_chain_is_used_only_while_its_certificates_are_valid(
    platform: SimulatedPlatform,
) -> None:
    verify(platform)
    assert len(pck_chain_cache) == 1
    with pytest.raises(QuoteVerificationError) as caught:
        verify(platform, now=NOW - dt.timedelta(days=1))  # before any certificate
    assert caught.value.check == "pck_chain_validity"
    assert len(pck_chain_cache) == 0


def test_revocation_is_checked_on_every_use_of_a_cached_chain(
    platform: SimulatedPlatform,
) -> None:
    quote = platform.quote(IDENTITY, REPORT_DATA)
    verify(platform, quote=quote)
    start = NOW - dt.timedelta(minutes=30)

    def revoke(document: dict[str, str]) -> None:
        document["pck_crl"] = reissued_crl(
            platform, "platform_ca", [platform.certs["pck"].serial_number],
            this_update=start, next_update=start + dt.timedelta(days=1),
        )  # fmt: skip

    revoking = edit_collateral(platform.collateral_json(), revoke)
    with pytest.raises(QuoteVerificationError, match="PCK Certificate") as caught:
        verify(platform, quote=quote, collateral=revoking)
    assert caught.value.check == "revoked"
    assert pck_chain_cache.hits == 1


# -- signature checks remembered by the bytes they cover -----------------------------------------


def test_signature_memos_remember_results_by_bytes(platform: SimulatedPlatform) -> None:
    root, ca = platform.certs["root"], platform.certs["platform_ca"]
    crl_der = bytes.fromhex(json.loads(platform.collateral_json())["pck_crl"])
    assert pki.signed_by(ca, root) and pki.crl_signed_by(crl_der, ca)
    before = (pki.signed_by.cache_info(), pki.crl_signed_by.cache_info())
    assert pki.signed_by(ca, root) and pki.crl_signed_by(crl_der, ca)
    after = (pki.signed_by.cache_info(), pki.crl_signed_by.cache_info())
    assert [a.hits - b.hits for a, b in zip(after, before, strict=True)] == [1, 1]
    assert [a.misses - b.misses for a, b in zip(after, before, strict=True)] == [0, 0]
    # Other bytes are other keys: a stranger's certificate and CRL are checked, and refused,
    # and stay refused when asked again.
    stranger = SimulatedPlatform.create()
    forged_crl = bytes.fromhex(json.loads(stranger.collateral_json())["pck_crl"])
    for _attempt in range(2):
        assert not pki.signed_by(stranger.certs["platform_ca"], root)
        assert not pki.crl_signed_by(forged_crl, ca)


def test_a_platforms_qe_report_is_checked_once_and_a_tampered_one_every_time(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every quote of a platform carries the QE's one report for its attestation key.
    verify(platform)
    assert len(qe_report_cache) == 1
    signatures = Calls(monkeypatch, verifier, "ecdsa_p256_verify")
    verify(platform, quote=platform.quote(IDENTITY, b"\x07" * 64))
    assert signatures.count == 1  # the quote's own signature; the QE report's is remembered
    tampered = flip(platform.quote(IDENTITY, REPORT_DATA), QE_REPORT_SIGNATURE + 3)
    for _attempt in range(2):
        with pytest.raises(QuoteVerificationError) as caught:
            verify(platform, quote=tampered)
        assert caught.value.check == "qe_report_signature"
    assert len(qe_report_cache) == 1  # a failure is not remembered


def test_a_remembered_qe_report_is_used_only_while_its_pck_chain_is_valid(
    platform: SimulatedPlatform,
) -> None:
    quote = platform.quote(IDENTITY, REPORT_DATA)
    verify(platform, quote=quote)
    certification = parse_quote(quote).certification
    pck = pck_certificates(certification.pck_chain_pem)[0]
    key = (pck, certification.qe_report_signature, certification.qe_report.raw)
    assert qe_report_cache.get(key, NOW) is True
    assert qe_report_cache.get(key, pck.not_valid_after_utc + dt.timedelta(seconds=1)) is None


def test_a_tampered_certificate_signature_is_refused(platform: SimulatedPlatform) -> None:
    root, ca = platform.certs["root"], platform.certs["platform_ca"]
    assert pki.signed_by(ca, root)
    der = bytearray(ca.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    tampered = x509.load_der_x509_certificate(bytes(der))
    for _attempt in range(2):
        assert not pki.signed_by(tampered, root)


# -- the cache itself --------------------------------------------------------------------------


def test_validity_cache_window_and_bound() -> None:
    cache: ValidityCache[str, int] = ValidityCache(2)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    cache.put("a", 1, (start, end))
    assert cache.get("a", start) == 1 and cache.get("a", end) == 1  # both ends included
    assert cache.get("a", end + dt.timedelta(seconds=1)) is None
    assert cache.get("a", start) is None  # dropped, not kept for later
    for key in "bcd":
        cache.put(key, 0, (start, end))
    assert len(cache) == 2 and cache.get("b", start) is None  # the oldest went first


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_real_evidence_verifies_the_same_cold_and_warm(
    tee: str, request: pytest.FixtureRequest
) -> None:
    quote: bytes = request.getfixturevalue(f"{tee}_quote")
    collateral = Collateral.from_json(request.getfixturevalue(f"{tee}_collateral"))
    cold = verify_quote(quote, collateral, SAMPLE_TIME, ANY_STATUS)
    warm = verify_quote(quote, collateral, SAMPLE_TIME, ANY_STATUS)
    assert (pck_chain_cache.hits, collateral_cache.hits) == (1, 1)
    assert warm == cold
    with pytest.raises(QuoteVerificationError) as caught:
        verify_quote(quote, collateral, dt.datetime(2025, 7, 25, tzinfo=dt.UTC), ANY_STATUS)
    assert caught.value.check.endswith("_validity")
