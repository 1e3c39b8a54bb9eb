"""Manifest verification at scale: 1,000 services signed by 3 of 5 auditors.

The first row is the whole check a service runs (size, signatures, parse, expiry,
rollback) on a manifest as ``teaclave-ma manifest`` writes it, through the one strict YAML
reader. It is compared with PyYAML's own safe loader (libyaml) reading the same bytes into
plain Python objects, which checks nothing: a yardstick that moves with the machine. The
rows after it split the check into its parts; the parse is compared with libyaml's event
stream alone (PyYAML's ``yaml.parse``), the floor of a reader built on those events. Times
are CPU times, each pair run in turn (see ``cpu_medians_ms``).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import yaml

from benchmarks.common import Row, run_group
from benchmarks.quote_verification import cpu_medians_ms
from teaclave_ma.formats.manifest import parse_manifest
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.trust.manifest_trust import ManifestTrust

SERVICES = 1000
_LIBYAML: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def rows(smoke: bool) -> list[Row]:
    repetitions = 3 if smoke else 30
    panel = AuditorPanel(count=5, threshold=3)
    services = {
        f"service-{i}": [SgxIdentity(i.to_bytes(32, "big"), b"\x01" * 32, 1, 1, False)]
        for i in range(SERVICES)
    }
    data = panel.manifest(services)  # type: ignore[arg-type]
    signatures = panel.sign(data)
    trust = ManifestTrust(panel.trust)
    now = dt.datetime.now(dt.UTC)
    assert len(trust.check(data, signatures, now).manifest.enclaves) == SERVICES
    keys = [auditor.key.public_key for auditor in panel.signers(None)]
    raw_signatures = [auditor.sign(data).signature for auditor in panel.signers(None)]

    def signatures_only() -> None:
        for key, signature in zip(keys, raw_signatures, strict=True):
            assert key.verify(data, signature)

    check, plain_load = cpu_medians_ms(
        [
            lambda: trust.check(data, signatures, now),
            lambda: yaml.load(data, Loader=_LIBYAML),
        ],
        repetitions,
    )

    def events_only() -> None:
        for _event in yaml.parse(data, Loader=_LIBYAML):
            pass

    parse, events = cpu_medians_ms([lambda: parse_manifest(data), events_only], repetitions)
    signing, digest = cpu_medians_ms(
        [signatures_only, lambda: hashlib.sha256(data).hexdigest()], repetitions
    )
    return [
        Row(
            "manifest verification, 1,000 services, 3-of-5",
            check,
            "PyYAML safe_load alone",
            plain_load,
            target="under 60 ms",
            note=f"the manifest is {len(data) / 1000:.0f} kB; one strict YAML reader",
        ),
        Row(
            "  of which: 3 Ed25519 signature checks",
            signing,
            note="each hashes the whole manifest (SHA-512); libsodium via PyNaCl",
        ),
        Row(
            "  of which: parse (strict YAML reader, typed entries)",
            parse,
            "libyaml's events alone",
            events,
            note="values built from libyaml's events: decimal-only tags, no duplicates; typed entries",
        ),
        Row("  of which: SHA-256 of the manifest (rollback state)", digest),
    ]


if __name__ == "__main__":
    run_group(rows)
