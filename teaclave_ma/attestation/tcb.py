"""TCB evaluation: which TCB level a platform is at, and what status that gives.

The rules are those of Intel's QVL (AttestationLibrary/src/Verifiers/Checks/TcbLevelCheck.cpp,
TdxModuleCheck.cpp, TDRelaunchCheck.cpp; QuoteVerifier.cpp step 4.1.2.4.11 for the module's
identity): the TCB info's levels are walked in Intel's order (collateral.py sorts them), the
platform's level is the first one whose every component SVN is at most the platform's; the
TDX module's and the QE's own statuses can only lower the platform's status; a TD 1.5 that
runs on an out-of-date module of an updated platform is told to relaunch.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Sequence

import attrs

from teaclave_ma.attestation.collateral import IsvLevel, TcbInfo, TcbLevel, TdxModuleIdentity
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.pck_extension import PckExtension
from teaclave_ma.attestation.quote import TdReportBody

TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"
_CONFIGURATION_NEEDED = frozenset(
    {
        "ConfigurationNeeded",
        "OutOfDateConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
    }
)

_SGX_STATUSES_FOR_RELAUNCH = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)


def _date(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def isv_level(levels: Sequence[IsvLevel], isv_svn: int, what: str) -> IsvLevel:
    """The first level whose isvsvn is at most ``isv_svn``."""
    for level in levels:
        if level.isvsvn <= isv_svn:
            return level
    lowest = min(levels, key=lambda level: level.isvsvn)
    raise QuoteVerificationError(
        "tcb_level",
        f"{what} SVN {isv_svn} is below every TCB level (treated as revoked); "
        f"the lowest, {lowest.status} of {_date(lowest.tcb_date)}, needs {lowest.isvsvn}",
    )


def isv_shortfall(levels: Sequence[IsvLevel], have: int, what: str) -> tuple[str, ...]:
    """Why ``have`` is not at an UpToDate level: the first UpToDate level's isvsvn."""
    for level in levels:
        if level.status == "UpToDate" and level.isvsvn > have:
            when = _date(level.tcb_date)
            return (f"{what} isvsvn is {have}; its UpToDate level of {when} needs {level.isvsvn}",)
    return ()


def _tdx_start(td: TdReportBody) -> int:
    # With a TDX module of major version >= 1 (TEE_TCB_SVN[1]), bytes 0 and 1 describe the
    # module, which is evaluated against its module identity instead.
    return 2 if td.tee_tcb_svn[1] > 0 else 0


def _missing(
    level: TcbLevel, pck: PckExtension, td: TdReportBody | None
) -> list[tuple[str, int, int]]:
    """(component, the platform's SVN, the level's) for each component below ``level``."""
    short = [
        (f"sgxtcbcomp{i + 1:02d}", have, need)
        for i, (have, need) in enumerate(zip(pck.tcb_components, level.sgx_components, strict=True))
        if have < need
    ]
    if pck.pce_svn < level.pce_svn:
        short.append(("pcesvn", pck.pce_svn, level.pce_svn))
    if td is not None and level.tdx_components is not None:
        short += [
            (f"tdxtcbcomp{i + 1:02d}", td.tee_tcb_svn[i], level.tdx_components[i])
            for i in range(_tdx_start(td), 16)
            if td.tee_tcb_svn[i] < level.tdx_components[i]
        ]
    return short


def _explained(level: TcbLevel, short: list[tuple[str, int, int]]) -> tuple[str, ...]:
    where = f"the {level.status} level of {_date(level.tcb_date)}"
    return tuple(f"{name} is {have}; {where} needs {need}" for name, have, need in short)


def _reaches_sgx(level: TcbLevel, pck: PckExtension) -> bool:
    return pck.pce_svn >= level.pce_svn and all(
        map(operator.ge, pck.tcb_components, level.sgx_components)
    )


def _reaches_tdx(level: TcbLevel, td: TdReportBody) -> bool:
    need = level.tdx_components
    assert need is not None  # required in TDX TCB info
    have = td.tee_tcb_svn
    return all(have[i] >= need[i] for i in range(_tdx_start(td), 16))


def match_levels(
    info: TcbInfo, pck: PckExtension, td: TdReportBody | None
) -> tuple[TcbLevel, TcbLevel]:
    """The SGX level (SGX components and PCESVN only) and the platform's level (for a TD,
    its TDX components too), as Intel's matchTcbLevels selects them."""
    sgx: TcbLevel | None = None
    for level in info.levels:
        if not _reaches_sgx(level, pck):
            continue
        sgx = sgx or level
        if td is None or _reaches_tdx(level, td):
            return sgx, level
    lowest = info.levels[-1]
    raise QuoteVerificationError(
        "tcb_level",
        "the platform's TCB is below every level in the TCB info (treated as revoked): "
        + "; ".join(_explained(lowest, _missing(lowest, pck, td))),
    )


def platform_shortfalls(
    info: TcbInfo, pck: PckExtension, td: TdReportBody | None, level: TcbLevel
) -> tuple[str, ...]:
    """Why the platform's ``level`` is not UpToDate: the components below the TCB info's
    first UpToDate level (or, when none is, its highest level)."""
    if level.status == "UpToDate":
        return ()
    target = next((other for other in info.levels if other.status == "UpToDate"), info.levels[0])
    if target is level:
        return (
            f"the platform is at the TCB info's highest level ({level.status} of "
            f"{_date(level.tcb_date)}); no SVN of the platform is below it",
        )
    return _explained(target, _missing(target, pck, td))


@attrs.frozen
class ModuleVerdict:
    """The TDX module's identity (None for a TDX 1.0 module, TEE_TCB_SVN[1] = 0) and level."""

    identity: TdxModuleIdentity | None
    level: IsvLevel | None


def tdx_module(info: TcbInfo, td: TdReportBody) -> ModuleVerdict:
    """The TD's module is the one the TCB info describes (QuoteVerifier.cpp 4.1.2.4.11, for
    every TDX quote, whatever its module version), and its level (TdxModuleCheck.cpp)."""
    assert info.tdx_module is not None  # collateral.py requires it in TDX TCB info
    version = td.tee_tcb_svn[1]
    identity = _module_identity(info, version) if version > 0 else None
    expected = identity.module if identity is not None else info.tdx_module
    source = f"module identity {identity.id}" if identity is not None else "tdxModule"
    if td.mr_signer_seam != expected.mrsigner:
        raise QuoteVerificationError(
            "tdx_module",
            f"MRSIGNERSEAM {td.mr_signer_seam.hex()} is not the TCB info's {source} mrsigner "
            f"{expected.mrsigner.hex()}",
        )
    # Intel requires SEAMATTRIBUTES to be zero and equal to the expected attributes, mask
    # or not (QuoteVerifier.cpp 4.1.2.4.11.2).
    if any(td.seam_attributes) or td.seam_attributes != expected.attributes:
        raise QuoteVerificationError(
            "tdx_module",
            f"SEAMATTRIBUTES {td.seam_attributes.hex()} are not zero and the TCB info's "
            f"{source} attributes {expected.attributes.hex()}",
        )
    if identity is None:
        return ModuleVerdict(None, None)
    return ModuleVerdict(
        identity, isv_level(identity.levels, td.tee_tcb_svn[0], f"TDX module {identity.id}")
    )


def _module_identity(info: TcbInfo, version: int) -> TdxModuleIdentity:
    name = f"TDX_{version:02X}"
    for identity in info.tdx_module_identities:
        if identity.id == name:  # both upper-cased, as Intel compares them
            return identity
    raise QuoteVerificationError(
        "tdx_module",
        f"TCB info has no identity for TDX module {name} (TEE_TCB_SVN[1] = {version})",
    )


def td_relaunch(
    info: TcbInfo,
    td: TdReportBody,
    *,
    sgx_status: str,
    tdx_status: str,
    module_status: str,
    qe_status: str,
) -> str:
    """``tdx_status``, or TDRelaunchAdvised[ConfigurationNeeded] when a TD 1.5's module is
    out of date but TEE_TCB_SVN2 shows the platform now runs the latest one (Intel's
    TDRelaunchCheck.cpp: the QE up to date, the SGX level no worse than configuration
    needed, the TDX level out of date because of the module)."""
    svn2 = td.tee_tcb_svn2
    if (
        svn2 is None
        or qe_status != "UpToDate"
        or sgx_status not in _SGX_STATUSES_FOR_RELAUNCH
        or tdx_status not in ("OutOfDate", "OutOfDateConfigurationNeeded")
        or module_status != "OutOfDate"
    ):
        return tdx_status
    latest = info.levels[0]
    assert latest.tdx_components is not None  # required in TDX TCB info
    if svn2[1] == 0:
        updated = svn2[0] >= latest.tdx_components[0]
    else:
        updated = svn2[0] >= _module_identity(info, svn2[1]).levels[0].isvsvn
    if not (updated and svn2[2] >= latest.tdx_components[2]):
        return tdx_status
    if sgx_status in _CONFIGURATION_NEEDED or tdx_status in _CONFIGURATION_NEEDED:
        return TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED
    return TD_RELAUNCH_ADVISED


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
