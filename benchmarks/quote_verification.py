"""Quote verification, cold and warm, side by side with dcap-qvl on the same real evidence."""

from __future__ import annotations

import datetime as dt

import dcap_qvl

from benchmarks.common import SHARED, Row, median_ms, run_group
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.verifier import clear_caches, verify_quote

SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


def rows(smoke: bool) -> list[Row]:
    repetitions = 3 if smoke else 200
    quote = (SHARED / "sgx" / "quote.bin").read_bytes()
    collateral_json = (SHARED / "sgx" / "collateral.json").read_text()
    policy = VerificationPolicy.permissive_tcb()
    oracle_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    now = int(SAMPLE_TIME.timestamp())
    theirs = median_ms(lambda: dcap_qvl.verify(quote, oracle_collateral, now), repetitions)

    def cold() -> None:
        # Nothing remembered: parse the collateral and check every signature again.
        clear_caches()
        verify_quote(quote, Collateral.from_json(collateral_json), SAMPLE_TIME, policy)

    parsed = Collateral.from_json(collateral_json)
    warm = median_ms(lambda: verify_quote(quote, parsed, SAMPLE_TIME, policy), repetitions)
    return [
        Row(
            "quote verification, cold",
            median_ms(cold, repetitions),
            "dcap-qvl",
            theirs,
            "within 1.5x of dcap-qvl",
        ),
        Row("quote verification, warm", warm, "dcap-qvl", theirs, "faster than dcap-qvl"),
    ]


if __name__ == "__main__":
    run_group(rows)
