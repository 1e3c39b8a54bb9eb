"""Where quotes and sealing keys come from.

Backends implement ``Attester``: give report_data, get back a quote; name a key policy,
get back a sealing key (as SGX's EGETKEY gives them). Real hardware backends read
Gramine's /dev/attestation or Linux configfs-tsm; ``SimulatedAttester`` asks the simulated
platform on behalf of an enclave identity measured from its image.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.errors import InputError, VerificationError
from teaclave_ma.identity import SgxIdentity, TdxIdentity


class SealingPolicy(enum.Enum):
    """What a sealing key is bound to: the exact build, or its author and product (which
    lets a rebuilt service with the same or a higher ISV SVN read what it sealed)."""

    MRENCLAVE = "mrenclave"
    MRSIGNER = "mrsigner"


class SealingUnavailable(InputError):
    """A backend that has no sealing key to give; ``field`` names the backend."""


TDX_HAS_NO_SEALING_KEY = (
    "a TDX guest has no sealing key (TDX has no EGETKEY): its state needs a key from the kms, "
    "or stays unsealed under the service's explicit unsealed_ok opt-in"
)


class SealingKeyRefused(VerificationError):
    """A key request that EGETKEY would refuse (an ISV SVN above the enclave's own)."""


class Attester(Protocol):
    def quote(self, report_data: bytes) -> bytes: ...

    def sealing_key(self, policy: SealingPolicy, isv_svn: int | None = None) -> bytes:
        """The 16-byte sealing key under ``policy``; for MRSIGNER, ``isv_svn`` asks for the
        key of an ISV SVN at or below the enclave's own (None: its own)."""
        ...


@attrs.frozen
class SimulatedAttester:
    platform: SimulatedPlatform
    identity: SgxIdentity

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.quote(self.identity, report_data)

    def sealing_key(self, policy: SealingPolicy, isv_svn: int | None = None) -> bytes:
        own = self.identity.isv_svn
        if isv_svn is None:
            isv_svn = own
        if isv_svn > own:
            raise SealingKeyRefused(
                "sealing_key_svn",
                f"a sealing key for ISV SVN {isv_svn} was asked for by an enclave at ISV SVN "
                f"{own}; keys exist only for SVNs at or below the enclave's own",
            )
        return self.platform.sealing_key(self.identity, policy.value, isv_svn)


@attrs.frozen
class SimulatedTdAttester:
    """A TDX guest on the simulated platform: v4 quotes from the TD quoting enclave."""

    platform: SimulatedPlatform
    identity: TdxIdentity

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.td_quote(self.identity, report_data)

    def sealing_key(self, policy: SealingPolicy, isv_svn: int | None = None) -> bytes:
        raise SealingUnavailable("simulated TDX", TDX_HAS_NO_SEALING_KEY)
