"""Manifest verification at scale: 1,000 services signed by 3 of 5 auditors.

The first row is the whole check a service runs (size, signatures, parse, expiry,
rollback) on a manifest as ``teaclave-ma manifest`` writes it. It is compared with the
same manifest spelt by hand (a comment line on top), which the canonical reader leaves to
the general strict YAML loader, so the ratio is what the canonical reader buys. The rows
after it split the check into its parts.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from benchmarks.common import Row, median_ms, run_group
from teaclave_ma.formats.manifest import parse_manifest, read_canonical, read_general
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.trust.manifest_trust import ManifestTrust

SERVICES = 1000


def rows(smoke: bool) -> list[Row]:
    repetitions = 3 if smoke else 30
    panel = AuditorPanel(count=5, threshold=3)
    services = {
        f"service-{i}": [SgxIdentity(i.to_bytes(32, "big"), b"\x01" * 32, 1, 1, False)]
        for i in range(SERVICES)
    }
    data = panel.manifest(services)  # type: ignore[arg-type]
    hand_written = b"# reviewed by the audit board\n" + data
    text = data.decode()
    # Guard the comparison: the first is read by the canonical reader, the second is not.
    assert read_canonical(text) is not None
    assert read_canonical(hand_written.decode()) is None
    signatures = panel.sign(data)
    hand_signatures = panel.sign(hand_written)
    trust = ManifestTrust(panel.trust)
    now = dt.datetime.now(dt.UTC)
    keys = [auditor.key.public_key for auditor in panel.signers(None)]
    raw_signatures = [auditor.sign(data).signature for auditor in panel.signers(None)]

    def signatures_only() -> None:
        for key, signature in zip(keys, raw_signatures, strict=True):
            assert key.verify(data, signature)

    size = f"{len(data) / 1000:.0f} kB"
    return [
        Row(
            "manifest verification, 1,000 services, 3-of-5",
            median_ms(lambda: trust.check(data, signatures, now), repetitions),
            "hand-written",
            median_ms(lambda: trust.check(hand_written, hand_signatures, now), repetitions),
            target="under 10 ms",
            note=f"the manifest is {size}; 'hand-written' is the same one with a comment on top",
        ),
        Row(
            "  of which: 3 Ed25519 signature checks",
            median_ms(signatures_only, repetitions),
            note="each hashes the whole manifest (SHA-512); libsodium via PyNaCl",
        ),
        Row(
            "  of which: parse, canonical layout",
            median_ms(lambda: parse_manifest(data), repetitions),
            "general loader",
            median_ms(lambda: read_general(text), repetitions),
            note="general loader: PyYAML with libyaml, duplicate keys refused, then typed checks",
        ),
        Row(
            "  of which: SHA-256 of the manifest (rollback state)",
            median_ms(lambda: hashlib.sha256(data).hexdigest(), repetitions),
        ),
    ]


if __name__ == "__main__":
    run_group(rows)
