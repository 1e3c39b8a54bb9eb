"""A simulated Intel SGX DCAP platform, for tests and development only.

It speaks the real formats (v3 quotes, PCK certificates with the SGX extension, CRLs, TCB
info and QE identity signed like Intel's), under a root CA generated per platform whose
name says SIMULATED. Production verifiers refuse it unless explicitly told otherwise.
"""
