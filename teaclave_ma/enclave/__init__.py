"""Simulated SGX enclave images: building, measuring, signing and loading."""
