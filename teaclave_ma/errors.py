"""The one exception hierarchy of teaclave-ma.

Every error a caller can provoke with bad input derives from ``TeaclaveMAError``; subpackages
derive their own, more specific classes from the families below so that callers can catch
as broadly or as narrowly as they need.
"""

from __future__ import annotations


class TeaclaveMAError(Exception):
    """Base of every error teaclave-ma raises on purpose."""


class InputError(TeaclaveMAError):
    """Input that cannot be used at all: malformed bytes, a wrong type, an unknown field.

    ``field`` names where the problem is (a dotted path, or a byte field of a binary
    format), so messages read like ``enclaves.storage[1].mr_enclave: expected ...``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class VerificationError(TeaclaveMAError):
    """Well-formed input that fails a security check. ``check`` names the check."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


class ConfigError(InputError):
    """A service, enclave or trust configuration that is unusable."""
