from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform

# Inside both real samples' collateral windows (see ../shared/data/README.md).
SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def sgx_quote(shared_data: Path) -> bytes:
    return (shared_data / "sgx" / "quote.bin").read_bytes()


@pytest.fixture(scope="session")
def sgx_collateral(shared_data: Path) -> bytes:
    return (shared_data / "sgx" / "collateral.json").read_bytes()


@pytest.fixture(scope="session")
def tdx_quote(shared_data: Path) -> bytes:
    return (shared_data / "tdx" / "quote.bin").read_bytes()


@pytest.fixture(scope="session")
def tdx_collateral(shared_data: Path) -> bytes:
    return (shared_data / "tdx" / "collateral.json").read_bytes()


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()
