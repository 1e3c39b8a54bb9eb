"""Run every benchmark in one process, print a table and write the same rows as JSON.

Ratios are measured side by side in the same run and each figure is the median of several
repetitions, because these machines are noisy. ``--smoke`` runs each row a few times only,
to keep the command working in CI; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import dcap_qvl

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.verifier import clear_caches, verify_quote
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.trust.manifest_trust import ManifestTrust

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


@attrs.frozen
class Row:
    what: str
    median_ms: float
    compared_with: str = ""
    other_ms: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.other_ms is None else self.median_ms / self.other_ms


def median_ms(function: Callable[[], object], repetitions: int) -> float:
    samples = []
    for _ in range(repetitions):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def quote_verification(repetitions: int) -> list[Row]:
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


def manifest_verification(repetitions: int) -> list[Row]:
    panel = AuditorPanel(count=5, threshold=3)
    services = {
        f"service-{i}": [SgxIdentity(i.to_bytes(32, "big"), b"\x01" * 32, 1, 1, False)]
        for i in range(1000)
    }
    data = panel.manifest(services)  # type: ignore[arg-type]
    signatures = panel.sign(data)
    trust = ManifestTrust(panel.trust)
    now = dt.datetime.now(dt.UTC)
    return [
        Row(
            "manifest verification, 1,000 services, 3-of-5",
            median_ms(lambda: trust.check(data, signatures, now), repetitions),
            target="under 10 ms",
        )
    ]


def render(rows: list[Row]) -> str:
    lines = [
        f"{'what':<48} {'median':>10} {'compared with':>14} {'other':>10} {'ratio':>7}  target"
    ]
    for row in rows:
        other = f"{row.other_ms:.3f}" if row.other_ms is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(
            f"{row.what:<48} {row.median_ms:>8.3f}ms {row.compared_with or '-':>14} {other:>10} {ratio:>7}  {row.target}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few repetitions, to check it runs")
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results.json"), help="where to write rows"
    )
    args = parser.parse_args(argv)
    repetitions = 3 if args.smoke else 200
    rows = quote_verification(repetitions) + manifest_verification(3 if args.smoke else 30)
    sys.stdout.write(render(rows) + "\n")
    report = {
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": platform.processor(),
        },
        "repetitions": repetitions,
        "rows": [{**attrs.asdict(row), "ratio": row.ratio} for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
