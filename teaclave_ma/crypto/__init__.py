"""Key material: auditor Ed25519 keys and enclave author RSA keys."""
