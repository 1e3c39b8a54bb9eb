"""Setting up the attestation of a process: where our quotes come from, which root we
trust in peers' quotes, and where their collateral comes from.

Everything that decides trust comes from the measured image: its attestation profile
(Intel's root, or the one simulated platform it was built for) and the backends its
service.yaml allows. The host supplies only locations: the simulated platform's
directory, whose root must be the measured one, and the collateral's source, which is
signed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import attrs

from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.attester import Attester, SimulatedAttester, SimulatedTdAttester
from teaclave_ma.attestation.backends import AttesterUnavailable, GramineAttester, TsmAttester
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pccs import fetch_collateral_for
from teaclave_ma.attestation.quote import Quote
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.errors import ConfigError, VerificationError
from teaclave_ma.formats.runtime_config import AttestationConfig
from teaclave_ma.formats.service_config import BackendConfig

log = logging.getLogger(__name__)

RealAttester = GramineAttester | TsmAttester


@attrs.frozen
class AttestationSetup:
    backend: str
    attester: Attester
    anchor: TrustAnchor
    collateral_for: Callable[[Quote], Collateral]


class TrustRootMismatch(VerificationError):
    """The simulated platform the host points at is not the one measured into the image."""

    def __init__(self, message: str) -> None:
        super().__init__("trusted_root", message)


def real_backends(config: BackendConfig, runtime: AttestationConfig) -> list[RealAttester]:
    """The backends the image allows, in its order of preference."""
    available: dict[str, RealAttester] = {
        "gramine": GramineAttester(config.gramine_device),
        "tsm": TsmAttester(config.tsm_root, entry_name=runtime.tsm_entry),
    }
    return [available[name] for name in config.backends]


def select_real_backend(config: BackendConfig, runtime: AttestationConfig) -> RealAttester:
    """The first backend of the image's list that is present here."""
    reasons = []
    for candidate in real_backends(config, runtime):
        try:
            candidate.check()
        except AttesterUnavailable as exc:
            reasons.append(str(exc))
            continue
        return candidate
    raise AttesterUnavailable(
        ", ".join(config.backends),
        "none of the attestation backends this image allows is here (" + "; ".join(reasons) + ")",
    )


def _static(collateral: Collateral) -> Callable[[Quote], Collateral]:
    return lambda _quote: collateral


def _from_pccs(url: str, cache: Path, update: str) -> Callable[[Quote], Collateral]:
    def collateral_for(quote: Quote) -> Collateral:
        return Collateral.from_json(fetch_collateral_for(quote, url, cache, update=update))

    return collateral_for


def peer_collateral(config: AttestationConfig) -> Callable[[Quote], Collateral]:
    """Where peers' quote collateral comes from, for Intel-rooted quotes: a file or a PCCS."""
    if config.collateral_file is not None:
        return _static(Collateral.from_json(config.collateral_file.read_bytes()))
    if config.pccs_url is not None and config.pccs_cache is not None:
        return _from_pccs(config.pccs_url, config.pccs_cache, config.pccs_update)
    raise ConfigError(
        "attestation.collateral",
        "a real image needs collateral for its peers' quotes: {pccs: URL} or {file: PATH}",
    )


def setup_attestation(image: EnclaveImage, config: AttestationConfig) -> AttestationSetup:
    if image.profile.simulated:
        return _simulated(image, config)
    if config.platform_dir is not None:
        raise ConfigError(
            "attestation.simulated_platform",
            f"{image.service.name} was built without --simulated-platform: it trusts "
            f"{image.profile.anchor.name} only, so a simulated platform cannot serve it",
        )
    attester = select_real_backend(image.service.attestation, config)
    collateral_for = peer_collateral(config)
    log.info("attestation backend: %s", attester.name)
    return AttestationSetup(attester.name, attester, image.profile.anchor, collateral_for)


def _simulated(image: EnclaveImage, config: AttestationConfig) -> AttestationSetup:
    profile = image.profile
    if config.platform_dir is None:
        raise ConfigError(
            "attestation.simulated_platform",
            f"{image.service.name} was built for a simulated platform: runtime.yaml must say "
            "where it is",
        )
    platform = SimulatedPlatform.load(config.platform_dir)
    actual = hashlib.sha256(platform.root_certificate_der).digest()
    if actual != profile.anchor.root_sha256:
        raise TrustRootMismatch(
            f"the simulated platform at {config.platform_dir} has root SHA-256 {actual.hex()}; "
            f"{image.service.name} trusts only {profile.anchor.root_sha256.hex()} "
            f"({profile.anchor.name}, measured at build)"
        )
    log.warning(
        "SIMULATED attestation (measured into %s): peers are verified against a simulated "
        "root; nothing here proves that code runs in real SGX hardware",
        image.service.name,
    )
    attester: Attester = (
        SimulatedTdAttester(platform, simulated_td_identity(image.identity))
        if profile.simulated_tee == "TDX"
        else SimulatedAttester(platform, image.identity)
    )
    return AttestationSetup(
        f"simulated {profile.simulated_tee}",
        attester,
        profile.anchor,
        platform.collateral_for(),
    )
