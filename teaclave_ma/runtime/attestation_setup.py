"""Choosing the attestation backend of a process: where our quotes come from, which root we
trust in peers' quotes, and where their collateral comes from.

Real backends (Gramine, configfs-tsm) trust Intel's root and take collateral from a file or
a PCCS. The simulated backend trusts its own platform's root, and only because the
deployment explicitly said so; ``auto`` never selects it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.attester import Attester, SimulatedAttester, SimulatedTdAttester
from teaclave_ma.attestation.backends import AttesterUnavailable, GramineAttester, TsmAttester
from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pccs import fetch_collateral
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.quote import Quote, pck_certificates
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.td_identity import simulated_td_identity
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.runtime_config import AttestationConfig
from teaclave_ma.identity import SgxIdentity

log = logging.getLogger(__name__)

RealAttester = GramineAttester | TsmAttester


@attrs.frozen
class AttestationSetup:
    backend: str
    attester: Attester
    anchor: TrustAnchor
    collateral_for: Callable[[Quote], Collateral]


def real_backends(config: AttestationConfig) -> list[RealAttester]:
    return [
        GramineAttester(config.gramine_device),
        TsmAttester(config.tsm_root, entry_name=config.tsm_entry),
    ]


def select_real_backend(config: AttestationConfig) -> RealAttester:
    """The backend named in the config, or for ``auto`` the first one present."""
    candidates = real_backends(config)
    if config.backend != "auto":
        chosen = next(c for c in candidates if c.name == config.backend)
        chosen.check()
        return chosen
    reasons = []
    for candidate in candidates:
        try:
            candidate.check()
        except AttesterUnavailable as exc:
            reasons.append(str(exc))
            continue
        return candidate
    raise AttesterUnavailable(
        "auto", "no real attestation backend here (" + "; ".join(reasons) + ")"
    )


def _static(collateral: Collateral) -> Callable[[Quote], Collateral]:
    return lambda _quote: collateral


def _from_pccs(config: AttestationConfig) -> Callable[[Quote], Collateral]:
    assert config.pccs_url is not None and config.pccs_cache is not None

    def collateral_for(quote: Quote) -> Collateral:
        chain = pck_certificates(quote.certification.pck_chain_pem)
        ca = "processor" if "Processor" in chain[1].subject.rfc4514_string() else "platform"
        fmspc = parse_pck_extension(chain[0]).fmspc
        assert config.pccs_url is not None and config.pccs_cache is not None
        return Collateral.from_json(fetch_collateral(config.pccs_url, fmspc, ca, config.pccs_cache))

    return collateral_for


def setup_attestation(config: AttestationConfig, image_identity: SgxIdentity) -> AttestationSetup:
    if config.backend == "simulated":
        if config.platform_dir is None:
            raise ConfigError(
                "attestation.simulated_platform", "required for the simulated backend"
            )
        platform = SimulatedPlatform.load(config.platform_dir)
        log.warning(
            "SIMULATED attestation: peers are verified against a simulated root; "
            "nothing here proves that code runs in real SGX hardware"
        )
        anchor = TrustAnchor.for_root(
            platform.root_certificate_der, "simulated SGX root (this installation)"
        )
        # One simulated platform certifies every local enclave and TD: one collateral set per TEE.
        collaterals = {
            tee: Collateral.from_json(platform.collateral_json(tee)) for tee in ("SGX", "TDX")
        }
        attester: Attester = (
            SimulatedTdAttester(platform, simulated_td_identity(image_identity))
            if config.tee == "TDX"
            else SimulatedAttester(platform, image_identity)
        )
        return AttestationSetup(
            f"simulated {config.tee}", attester, anchor, lambda quote: collaterals[quote.tee]
        )
    attester = select_real_backend(config)
    if config.collateral_file is not None:
        collateral_for = _static(Collateral.from_json(config.collateral_file.read_bytes()))
    else:
        collateral_for = _from_pccs(config)
    log.info("attestation backend: %s", attester.name)
    return AttestationSetup(attester.name, attester, INTEL_SGX_ROOT_CA, collateral_for)
