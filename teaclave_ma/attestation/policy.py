"""What a relying party accepts once a quote has verified: TCB statuses, advisories, how
fresh the collateral must be, and debug enclaves.

The default accepts only ``UpToDate`` non-debug enclaves, with collateral of any TCB
evaluation and any advisory. Opt-ins mirror Gramine's ``RA_TLS_ALLOW_*`` switches and
dcap-qvl's ``allow_status``; ``Revoked`` is never accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from teaclave_ma.attestation.collateral import TCB_LEVEL_STATUSES
from teaclave_ma.attestation.tcb import (
    TD_RELAUNCH_ADVISED,
    TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED,
)
from teaclave_ma.errors import ConfigError

# Every status a verdict can have: a TCB level's, or (TD 1.5 only) a relaunch advice.
TCB_STATUSES = TCB_LEVEL_STATUSES | {TD_RELAUNCH_ADVISED, TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED}

# Gramine's environment switches and the statuses each one admits.
GRAMINE_OPT_INS: Mapping[str, frozenset[str]] = {
    "RA_TLS_ALLOW_OUTDATED_TCB_INSECURE": frozenset({"OutOfDate", "OutOfDateConfigurationNeeded"}),
    "RA_TLS_ALLOW_HW_CONFIG_NEEDED": frozenset(
        {"ConfigurationNeeded", "OutOfDateConfigurationNeeded"}
    ),
    "RA_TLS_ALLOW_SW_HARDENING_NEEDED": frozenset({"SWHardeningNeeded"}),
}
GRAMINE_DEBUG_OPT_IN = "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE"


def _as_frozenset(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _check_statuses(_inst: object, _attr: object, value: frozenset[str]) -> None:
    unknown = sorted(value - TCB_STATUSES)
    if unknown:
        raise ConfigError("allowed_tcb_statuses", f"unknown TCB status {unknown[0]!r}")
    if "Revoked" in value:
        raise ConfigError("allowed_tcb_statuses", "Revoked can never be allowed")


def _as_optional_frozenset(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _check_evaluation_number(_inst: object, _attr: object, value: int) -> None:
    if type(value) is not int or value < 0:
        raise ConfigError(
            "min_tcb_evaluation_data_number", f"expected an integer >= 0, got {value!r}"
        )


@attrs.frozen
class VerificationPolicy:
    allowed_tcb_statuses: frozenset[str] = attrs.field(
        default=frozenset({"UpToDate"}), converter=_as_frozenset, validator=_check_statuses
    )
    allow_debug: bool = False
    # TCB info and QE identity of an older TCB evaluation (tcbEvaluationDataNumber) are
    # refused: a host cannot serve collateral from before a TCB recovery.
    min_tcb_evaluation_data_number: int = attrs.field(default=0, validator=_check_evaluation_number)
    # None: any advisory; otherwise every reported advisory must be one of these.
    allowed_advisories: frozenset[str] | None = attrs.field(
        default=None, converter=_as_optional_frozenset
    )

    def allow_status(self, *statuses: str) -> VerificationPolicy:
        return attrs.evolve(self, allowed_tcb_statuses=self.allowed_tcb_statuses | set(statuses))

    @classmethod
    def permissive_tcb(cls) -> VerificationPolicy:
        """Every status but Revoked (for inspection tools and differential tests)."""
        return cls(allowed_tcb_statuses=TCB_STATUSES - {"Revoked"})

    @classmethod
    def from_gramine_env(cls, environ: Mapping[str, str]) -> VerificationPolicy:
        """The policy Gramine's RA-TLS verifier would apply under these environment switches."""
        allowed: set[str] = {"UpToDate"}
        for switch, statuses in GRAMINE_OPT_INS.items():
            if environ.get(switch) == "1":
                allowed |= statuses
        if (
            environ.get("RA_TLS_ALLOW_HW_CONFIG_NEEDED") == "1"
            and environ.get("RA_TLS_ALLOW_SW_HARDENING_NEEDED") == "1"
        ):
            allowed.add("ConfigurationAndSWHardeningNeeded")
        return cls(
            allowed_tcb_statuses=frozenset(allowed),
            allow_debug=environ.get(GRAMINE_DEBUG_OPT_IN) == "1",
        )
