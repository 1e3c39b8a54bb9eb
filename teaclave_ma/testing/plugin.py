"""pytest plugin (entry point ``pytest11``): fixtures for testing services built on teaclave-ma.

- ``auditor_panel``: three fake auditors, threshold 2.
- ``make_auditor_panel(count, threshold)``: any other panel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from teaclave_ma.testing.auditors import AuditorPanel


@pytest.fixture
def auditor_panel() -> AuditorPanel:
    return AuditorPanel(count=3, threshold=2)


@pytest.fixture
def make_auditor_panel() -> Callable[..., AuditorPanel]:
    return AuditorPanel
