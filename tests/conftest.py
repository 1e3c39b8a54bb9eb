from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real quotes, collateral and a Gramine certificate, read-only, beside the checkout."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"real evidence missing: expected {SHARED_DATA} beside the checkout")
    return SHARED_DATA
