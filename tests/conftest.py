from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time, so a red run is reproducible and never a fluke of
# the draw; locally every run explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real quotes, collateral and a Gramine certificate, read-only, beside the checkout."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"real evidence missing: expected {SHARED_DATA} beside the checkout")
    return SHARED_DATA
