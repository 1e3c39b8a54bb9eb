from __future__ import annotations

from pathlib import Path

import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


@pytest.fixture(scope="module")
def gramine_cert(shared_data: Path) -> bytes:
    return (shared_data / "ratls" / "gramine-cert.pem").read_bytes()
