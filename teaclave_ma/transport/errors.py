"""Errors about RA-TLS certificates."""

from __future__ import annotations

from teaclave_ma.errors import InputError, VerificationError


class CertificateFormatError(InputError):
    """A certificate, or the evidence inside it, that cannot be parsed."""


class EvidenceError(VerificationError):
    """A certificate whose evidence fails a check (missing quote, binding, validity)."""
