"""Quote verification side by side with dcap-qvl on the same real evidence, and what each
of the verifier's caches saves.

Cold: both sides start from the quote bytes and the collateral JSON text and remember
nothing. Warm: both sides are given parsed collateral; ours has verified the collateral and
the PCK chain before (as for a new quote from a known platform), and still checks the QE
report and quote signatures, the validity times and the CRLs every time. Times are CPU
times of this process (see ``cpu_medians_ms``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
import time
from collections.abc import Callable, Sequence

import dcap_qvl

from benchmarks.common import SHARED, Row, run_group
from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.verifier import clear_caches, verify_quote
from teaclave_ma.identity import SgxIdentity

SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
POLICY = VerificationPolicy.permissive_tcb()
NO_CACHE = "nothing remembered (all caches cleared before each run)"


class Mismatch(RuntimeError):
    """The two verifiers disagree: the figures would compare different work."""


def cpu_medians_ms(functions: Sequence[Callable[[], object]], repetitions: int) -> list[float]:
    """The median CPU time of each function, run in turn so that a noisy neighbour slows all
    alike. CPU time, as wall time on a shared machine also counts the time spent waiting
    for a core, which grows with the length of the call and so skews the ratios."""
    samples: list[list[float]] = [[] for _ in functions]
    for _ in range(repetitions):
        for function, into in zip(functions, samples, strict=True):
            start = time.process_time()
            function()
            into.append((time.process_time() - start) * 1000)
    return [statistics.median(times) for times in samples]


def real_sample_rows(repetitions: int) -> list[Row]:
    quote = (SHARED / "sgx" / "quote.bin").read_bytes()
    collateral_json = (SHARED / "sgx" / "collateral.json").read_text()
    now = int(SAMPLE_TIME.timestamp())
    theirs_parsed = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    ours = verify_quote(quote, Collateral.from_json(collateral_json), SAMPLE_TIME, POLICY)
    report = dcap_qvl.verify(quote, theirs_parsed, now)
    if report.status != ours.tcb_status:
        raise Mismatch(f"dcap-qvl says {report.status}, we say {ours.tcb_status}")

    def theirs_cold() -> None:
        dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(collateral_json), now)

    def cold() -> None:
        clear_caches()
        verify_quote(quote, Collateral.from_json(collateral_json), SAMPLE_TIME, POLICY)

    def collateral_known() -> None:
        # A first quote from a new platform whose collateral (same FMSPC) was verified before.
        clear_caches(collateral=False)
        verify_quote(quote, Collateral.from_json(collateral_json), SAMPLE_TIME, POLICY)

    def chain_known() -> None:
        # Fresh collateral (say, after its nextUpdate) for a platform whose chain is known.
        clear_caches(pck_chains=False)
        verify_quote(quote, Collateral.from_json(collateral_json), SAMPLE_TIME, POLICY)

    parsed = Collateral.from_json(collateral_json)

    def warm() -> None:
        verify_quote(quote, parsed, SAMPLE_TIME, POLICY)

    # In this order each run leaves the caches the next one needs: cold fills both.
    cold_ms, theirs_cold_ms, with_collateral, with_chain = cpu_medians_ms(
        (cold, theirs_cold, collateral_known, chain_known), repetitions
    )
    verify_quote(quote, parsed, SAMPLE_TIME, POLICY)  # the runs above emptied the caches
    warm_ms, theirs_warm_ms = cpu_medians_ms(
        (warm, lambda: dcap_qvl.verify(quote, theirs_parsed, now)), repetitions
    )
    same_input = "both sides from the quote bytes and the collateral JSON text"
    return [
        Row(
            "quote verification, cold",
            cold_ms,
            "dcap-qvl",
            theirs_cold_ms,
            "within 1.5x of dcap-qvl",
            note=f"real SGX sample; {same_input}; {NO_CACHE}; CPU time",
        ),
        Row(
            "quote verification, warm",
            warm_ms,
            "dcap-qvl",
            theirs_warm_ms,
            "faster than dcap-qvl",
            note="both sides given parsed collateral; ours has verified collateral and PCK "
            "chain cached, checks QE report and quote signatures, times and CRLs every time; "
            "CPU time",
        ),
        Row(
            "cache effect: verified collateral only",
            with_collateral,
            "our cold",
            cold_ms,
            note="a new platform's first quote: PCK chain and signature memos cleared, "
            "collateral remembered",
        ),
        Row(
            "cache effect: verified PCK chain only",
            with_chain,
            "our cold",
            cold_ms,
            note="new collateral for a known platform: collateral parsed and verified "
            "afresh from its JSON, PCK chain remembered",
        ),
        Row(
            "cache effect: both (warm)",
            warm_ms,
            "our cold",
            cold_ms,
            note="verified collateral and PCK chain remembered; quote verified afresh",
        ),
    ]


def new_quote_rows(repetitions: int) -> list[Row]:
    """Warm, with a different quote each time (the real sample cannot be re-signed)."""
    platform = SimulatedPlatform.create()
    identity = SgxIdentity(b"\x11" * 32, b"\x22" * 32, isv_prod_id=1, isv_svn=1, debug=False)
    quotes = [platform.quote(identity, i.to_bytes(64, "big")) for i in range(16)]
    collateral_json = platform.collateral_json().decode()
    now = dt.datetime.now(dt.UTC)
    anchor = TrustAnchor.for_root(platform.root_certificate_der, "simulated", simulated=True)
    parsed = Collateral.from_json(collateral_json)
    theirs_parsed = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    ours_next, theirs_next = itertools.cycle(quotes), itertools.cycle(quotes)
    clear_caches()
    verify_quote(quotes[0], parsed, now, POLICY, anchor)
    ours, theirs = cpu_medians_ms(
        (
            lambda: verify_quote(next(ours_next), parsed, now, POLICY, anchor),
            lambda: dcap_qvl.verify_with_root_ca(
                next(theirs_next),
                theirs_parsed,
                platform.root_certificate_der,
                int(now.timestamp()),
            ),
        ),
        repetitions,
    )
    return [
        Row(
            "quote verification, warm, a new quote each time",
            ours,
            "dcap-qvl",
            theirs,
            "faster than dcap-qvl",
            note="simulated platform: 16 distinct quotes in turn; both sides given parsed "
            "collateral; ours has collateral and PCK chain cached",
        )
    ]


def rows(smoke: bool) -> list[Row]:
    repetitions = 3 if smoke else 200
    return real_sample_rows(repetitions) + new_quote_rows(repetitions)


if __name__ == "__main__":
    run_group(rows)
