"""Errors of the attestation package: malformed evidence, and evidence that fails a check."""

from __future__ import annotations

from teaclave_ma.errors import InputError, VerificationError


class QuoteFormatError(InputError):
    """A quote whose bytes do not follow Intel's layout; the message names field and offset."""


class PckExtensionError(InputError):
    """A PCK certificate whose Intel SGX extension is missing or malformed."""


class CollateralError(InputError):
    """Collateral (TCB info, QE identity, CRLs, issuer chains) that cannot be read."""


class QuoteVerificationError(VerificationError):
    """A quote that fails one of the DCAP checks; ``check`` names which."""


class PolicyRejected(QuoteVerificationError):
    """The quote verified, but the relying party's policy does not accept it.

    ``report`` carries the full verification result, so callers can still show the TCB
    status and advisories of a refused quote.
    """

    def __init__(self, check: str, message: str, report: object) -> None:
        self.report = report
        super().__init__(check, message)
