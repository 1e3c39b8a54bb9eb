"""Where quotes come from: give report_data, get back a quote.

Backends implement ``Attester``. Real hardware backends read Gramine's /dev/attestation
or Linux configfs-tsm; ``SimulatedAttester`` asks the simulated platform for a quote on
behalf of an enclave identity measured from its image.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.identity import SgxIdentity, TdxIdentity


class Attester(Protocol):
    def quote(self, report_data: bytes) -> bytes: ...


@attrs.frozen
class SimulatedAttester:
    platform: SimulatedPlatform
    identity: SgxIdentity

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.quote(self.identity, report_data)


@attrs.frozen
class SimulatedTdAttester:
    """A TDX guest on the simulated platform: v4 quotes from the TD quoting enclave."""

    platform: SimulatedPlatform
    identity: TdxIdentity

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.td_quote(self.identity, report_data)
