"""Manifest verification at scale: 1,000 services signed by 3 of 5 auditors."""

from __future__ import annotations

import datetime as dt

from benchmarks.common import Row, median_ms, run_group
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.trust.manifest_trust import ManifestTrust


def rows(smoke: bool) -> list[Row]:
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
            median_ms(lambda: trust.check(data, signatures, now), 3 if smoke else 30),
            target="under 10 ms",
        )
    ]


if __name__ == "__main__":
    run_group(rows)
