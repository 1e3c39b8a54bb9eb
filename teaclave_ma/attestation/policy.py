"""What a relying party accepts once a quote has verified: TCB statuses and debug enclaves.

The default accepts only ``UpToDate`` non-debug enclaves. Opt-ins mirror Gramine's
``RA_TLS_ALLOW_*`` switches and dcap-qvl's ``allow_status``; ``Revoked`` is never accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from teaclave_ma.errors import ConfigError

TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)

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


@attrs.frozen
class VerificationPolicy:
    allowed_tcb_statuses: frozenset[str] = attrs.field(
        default=frozenset({"UpToDate"}), converter=_as_frozenset, validator=_check_statuses
    )
    allow_debug: bool = False

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
