"""teaclave-ma: mutual remote attestation with auditor signatures between confidential services."""

__version__ = "0.1.0"
