"""Intel SGX/TDX DCAP evidence: quotes, collateral, verification, and attestation backends."""
