"""TCB evaluation: which TCB level a platform is at, and what status that gives.

Rules follow Intel's quote verification library: the matching level is the first one in
the TCB info whose every component SVN is at most the platform's; the QE's own TCB status
and (for TDX) the TDX module's status can only lower the platform's status.
"""

from __future__ import annotations

from collections.abc import Sequence

from teaclave_ma.attestation.collateral import TcbInfo, TcbLevel
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.pck_extension import PckExtension
from teaclave_ma.attestation.quote import TdReportBody

IsvLevels = Sequence[tuple[int, str, tuple[str, ...]]]


def isv_level(levels: IsvLevels, isv_svn: int, what: str) -> tuple[str, tuple[str, ...]]:
    """Status and advisories of the first level whose isvsvn is at most ``isv_svn``."""
    for level_svn, status, advisories in levels:
        if level_svn <= isv_svn:
            return status, advisories
    raise QuoteVerificationError(
        "tcb_level", f"{what} SVN {isv_svn} is below every TCB level (treated as revoked)"
    )


def _tdx_components_ok(level: TcbLevel, td: TdReportBody) -> bool:
    if level.tdx_components is None:
        raise QuoteVerificationError(
            "tcb_info", "a TDX quote needs TCB levels with tdxtcbcomponents"
        )
    # With a TDX module of major version >= 1 (byte 1), bytes 0 and 1 describe the module,
    # which is evaluated against tdxModuleIdentities instead.
    start = 2 if td.tee_tcb_svn[1] > 0 else 0
    return all(td.tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))


def platform_level(info: TcbInfo, pck: PckExtension, td: TdReportBody | None) -> TcbLevel:
    for level in info.levels:
        if pck.pce_svn < level.pce_svn:
            continue
        if any(
            have < need for have, need in zip(pck.tcb_components, level.sgx_components, strict=True)
        ):
            continue
        if td is not None and not _tdx_components_ok(level, td):
            continue
        return level
    raise QuoteVerificationError(
        "tcb_level", "the platform's TCB is below every level in the TCB info (treated as revoked)"
    )


def tdx_module_status(info: TcbInfo, td: TdReportBody) -> tuple[str, tuple[str, ...]]:
    version = td.tee_tcb_svn[1]
    if version == 0:
        return "UpToDate", ()
    name = f"TDX_{version:02X}"
    for module in info.tdx_module_identities:
        if module.id == name:
            if module.mrsigner != td.mr_signer_seam:
                raise QuoteVerificationError(
                    "tdx_module", f"{name}: mr_signer_seam does not match the TCB info"
                )
            if (
                bytes(
                    a & m for a, m in zip(td.seam_attributes, module.attributes_mask, strict=True)
                )
                != module.attributes
            ):
                raise QuoteVerificationError(
                    "tdx_module", f"{name}: seam attributes do not match the TCB info"
                )
            return isv_level(module.levels, td.tee_tcb_svn[0], f"TDX module {name}")
    raise QuoteVerificationError("tdx_module", f"TCB info has no identity for TDX module {name}")


def converge(platform: str, other: str) -> str:
    """The platform status lowered by a component's (QE or TDX module) status."""
    if other == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform
