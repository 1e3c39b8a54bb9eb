"""Fault: the PCCS goes away. Verification carries on with the cached collateral until the
earliest nextUpdate among its pieces, then fails with an error naming the PCCS and each
stale piece; a PCCS that comes back with the same, now stale, collateral is refused too,
and while the cache is valid a failed PCCS is not asked again on every verification.

The real SGX sample is verified at chosen moments inside and after its collateral window.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pccs import (
    DEFAULT_RETRY_AFTER,
    PccsError,
    PccsUnreachable,
    fetch_collateral,
    next_updates,
)
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.verifier import verify_quote
from tests.attestation.conftest import SAMPLE_TIME
from tests.attestation.test_pccs import FMSPC, FakePccs, serving

Outage = Callable[[FakePccs], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def _stopped(pccs: FakePccs) -> Iterator[str]:
    """Nothing listens any more: connections are refused."""
    pccs.shutdown()
    pccs.server_close()
    yield pccs.url


@contextlib.contextmanager
def _hung(pccs: FakePccs) -> Iterator[str]:
    """Connections are accepted by the kernel, and no answer ever comes."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/sgx/certification/v4"


@contextlib.contextmanager
def _failing(pccs: FakePccs) -> Iterator[str]:
    """The PCCS answers, but only that it cannot serve (as when its upstream PCS is down)."""
    pccs.fail_with = 503
    yield pccs.url


def _verify(quote: bytes, collateral: bytes, now: dt.datetime) -> str:
    # The sample's TCB status is not UpToDate; the policy is not what this test is about.
    policy = VerificationPolicy.permissive_tcb()
    return verify_quote(quote, Collateral.from_json(collateral), now, policy).tcb_status


@pytest.mark.parametrize("outage", [_stopped, _hung, _failing], ids=["refused", "hung", "503"])
def test_cached_collateral_is_used_until_its_next_update_then_a_typed_error(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: Outage
) -> None:
    quote = (shared_data / "sgx" / "quote.bin").read_bytes()
    sample = (shared_data / "sgx" / "collateral.json").read_bytes()
    first_stale = min(next_updates(sample).values())
    # A short timeout so that the hung PCCS costs half a second, not the default 30 s.
    with httpx.Client(timeout=0.5) as http, serving(sample) as pccs:

        def collateral(url: str, now: dt.datetime) -> bytes:
            return fetch_collateral(url, FMSPC, "processor", tmp_path, now=now, client=http)

        assert _verify(quote, collateral(pccs.url, SAMPLE_TIME), SAMPLE_TIME)
        with outage(pccs) as url:
            # Within the refresh window a fetch is attempted; it fails, and the cache serves.
            before = first_stale - dt.timedelta(minutes=1)
            assert _verify(quote, collateral(url, before), before)
            assert f"refreshing collateral from PCCS {url} failed" in caplog.text

            after = first_stale + dt.timedelta(minutes=1)
            with pytest.raises(PccsUnreachable) as caught:
                collateral(url, after)
            error = caught.value
            assert error.url == url
            assert str(error).startswith(f"{url}: PCCS unreachable")
            assert "/pckcrl" in error.reason
            # The QE identity is the first piece to go stale; the others are still valid.
            assert error.stale == (f"QE identity nextUpdate {first_stale:%Y-%m-%dT%H:%M:%SZ}",)
            assert "cached collateral for FMSPC 00a067110000 (processor CA) is stale" in str(error)

            with pytest.raises(PccsUnreachable) as caught:
                collateral(url, dt.datetime(2025, 8, 1, tzinfo=dt.UTC))
            stale = [piece.split(" nextUpdate ")[0] for piece in caught.value.stale]
            assert stale == ["QE identity", "PCK CRL", "TCB info"]  # the root CA CRL is valid


def test_a_pccs_back_with_stale_collateral_is_refused(shared_data: Path, tmp_path: Path) -> None:
    sample = (shared_data / "sgx" / "collateral.json").read_bytes()
    after = min(next_updates(sample).values()) + dt.timedelta(minutes=1)
    with serving(sample) as pccs:
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
        with pytest.raises(PccsError, match="served collateral that expired") as caught:
            fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=after)
    assert not isinstance(caught.value, PccsUnreachable)
    assert caught.value.field == pccs.url


def test_a_damaged_cache_is_fetched_again(shared_data: Path, tmp_path: Path) -> None:
    sample = (shared_data / "sgx" / "collateral.json").read_bytes()
    cache = tmp_path / f"{FMSPC.hex()}-processor.json"
    with serving(sample) as pccs:
        first = fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
        cache.write_bytes(first[: len(first) // 2])  # as after a crash mid-write elsewhere
        count = len(pccs.requests)
        assert fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME) == first
        assert len(pccs.requests) > count
    assert cache.read_bytes() == first


def test_a_failed_pccs_is_left_alone_for_a_while_as_long_as_the_cache_is_valid(
    shared_data: Path, tmp_path: Path
) -> None:
    """Verification runs inside TLS handshakes: they must not each wait for a PCCS that
    just failed. Once ``retry_after`` has passed, the next call tries again."""
    sample = (shared_data / "sgx" / "collateral.json").read_bytes()
    retry_after = DEFAULT_RETRY_AFTER
    with serving(sample) as pccs:

        def requests_for(now: dt.datetime) -> int:
            count = len(pccs.requests)
            fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=now)
            return len(pccs.requests) - count

        assert requests_for(SAMPLE_TIME) == 4  # PCK CRL, TCB info, QE identity, root CA CRL
        pccs.fail_with = 503
        failed = min(next_updates(sample).values()) - dt.timedelta(hours=2)
        assert requests_for(failed) == 1  # the first request fails; the cache serves
        assert requests_for(failed + retry_after / 2) == 0
        assert requests_for(failed + retry_after) == 1
        pccs.fail_with = None
        assert requests_for(failed + 2 * retry_after) == 4  # back, and fetched in full


@pytest.mark.parametrize("status", [404, 429])
def test_a_refresh_answered_with_a_client_error_serves_the_valid_cache(
    shared_data: Path, tmp_path: Path, status: int
) -> None:
    """A proxy's 404 or a rate limit during the refresh window must not refuse handshakes
    while the cached collateral is still valid; once it is not, the error names the PCCS."""
    sample = (shared_data / "sgx" / "collateral.json").read_bytes()
    first_stale = min(next_updates(sample).values())
    with serving(sample) as pccs:
        cached = fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
        pccs.fail_with = status
        before = first_stale - dt.timedelta(minutes=1)
        assert fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=before) == cached
        after = first_stale + dt.timedelta(minutes=1)
        with pytest.raises(PccsError, match=f"HTTP {status}") as caught:
            fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=after)
    assert isinstance(caught.value, PccsUnreachable) == (status == 429)  # 429: busy, not wrong
