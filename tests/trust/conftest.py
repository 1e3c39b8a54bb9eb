from __future__ import annotations

import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform


@pytest.fixture(scope="session")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()
