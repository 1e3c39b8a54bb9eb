"""Secrets for attested services: the key-provisioning policy, sealing, and fetching."""
