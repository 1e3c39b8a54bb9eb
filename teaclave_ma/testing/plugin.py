"""pytest plugin (entry point ``pytest11``): fixtures for testing services built on teaclave-ma.

- ``auditor_panel``: three fake auditors, threshold 2.
- ``make_auditor_panel(count, threshold)``: any other panel.
- ``make_deployment(services_dir)``: a ``SimulatedDeployment`` in a fresh temporary
  directory (auditors, trust file, author key, simulated platform); build and run your
  services on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.testing.deployment import SimulatedDeployment


@pytest.fixture
def auditor_panel() -> AuditorPanel:
    return AuditorPanel(count=3, threshold=2)


@pytest.fixture
def make_auditor_panel() -> Callable[..., AuditorPanel]:
    return AuditorPanel


@pytest.fixture
def make_deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[Path], SimulatedDeployment]:
    def make(services_dir: Path) -> SimulatedDeployment:
        return SimulatedDeployment.create(tmp_path_factory.mktemp("deployment"), Path(services_dir))

    return make
