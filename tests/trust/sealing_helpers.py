"""Sealed service state for tests that need one without a whole enclave: a sealer for an
identity on a simulated platform, and a keeper over a state file opened with it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from teaclave_ma.attestation.attester import SimulatedAttester
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.trust.keeper import ManifestKeeper, StateFile
from teaclave_ma.trust.manifest_trust import ManifestTrust
from teaclave_ma.trust.sealed_state import StateSealer

STORAGE = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=4, isv_svn=2, debug=False)


def sealer(
    platform: SimulatedPlatform, identity: SgxIdentity = STORAGE, service: str = "storage"
) -> StateSealer:
    return StateSealer(SimulatedAttester(platform, identity), service, identity.isv_svn)


def sealed_keeper(
    trust: ManifestTrust,
    directory: Path,
    state: Path,
    platform: SimulatedPlatform,
    *,
    initialize: bool = False,
    clock_source: Callable[[], dt.datetime] | None = None,
) -> ManifestKeeper:
    """A keeper of ``directory``'s manifest.yaml and sigs/, its state sealed at ``state``,
    reading ``clock_source`` as the host's clock."""
    kept = StateFile.open(state, sealer(platform), initialize=initialize)
    return ManifestKeeper(
        trust, directory / "manifest.yaml", directory / "sigs", kept, clock_source=clock_source
    )
