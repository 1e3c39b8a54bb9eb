"""Errors about enclave images."""

from __future__ import annotations

from teaclave_ma.errors import InputError, VerificationError


class ImageFormatError(InputError):
    """A service directory or image that cannot be built or read."""


class ImageError(VerificationError):
    """An image that fails an integrity check: tampered content, bad signature, mismatch."""
