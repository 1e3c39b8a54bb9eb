"""Serialising SGX reports and v3 quotes in Intel's byte layout."""

from __future__ import annotations

import struct

from teaclave_ma.attestation.quote import (
    ATTESTATION_KEY_ECDSA_P256,
    CERT_DATA_PCK_CHAIN,
    TEE_TYPE_SGX,
)
from teaclave_ma.errors import InputError

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
SGX_FLAGS_INIT = 0x01
SGX_FLAGS_DEBUG = 0x02
SGX_FLAGS_MODE64BIT = 0x04
SGX_XFRM_LEGACY = 0x03  # x87 and SSE state


def attributes(flags: int, xfrm: int = SGX_XFRM_LEGACY) -> bytes:
    return struct.pack("<QQ", flags, xfrm)


def report_body(
    *,
    cpu_svn: bytes,
    attributes: bytes,
    mr_enclave: bytes,
    mr_signer: bytes,
    isv_prod_id: int,
    isv_svn: int,
    config_svn: int,
    report_data: bytes,
    misc_select: int = 0,
) -> bytes:
    if len(report_data) != 64:
        raise InputError("report_data", f"must be 64 bytes, got {len(report_data)}")
    body = b"".join(
        (
            cpu_svn, struct.pack("<I", misc_select), bytes(12), bytes(16), attributes,
            mr_enclave, bytes(32), mr_signer, bytes(32), bytes(64),
            struct.pack("<HHH", isv_prod_id, isv_svn, config_svn), bytes(42), bytes(16), report_data,
        )
    )  # fmt: skip
    assert len(body) == 384
    return body


def header(*, qe_svn: int, pce_svn: int) -> bytes:
    return (
        struct.pack("<HHIHH", 3, ATTESTATION_KEY_ECDSA_P256, TEE_TYPE_SGX, qe_svn, pce_svn)
        + INTEL_QE_VENDOR_ID
        + bytes(20)
    )


def signature_data(
    *,
    quote_signature: bytes,
    attestation_key: bytes,
    qe_report: bytes,
    qe_report_signature: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
) -> bytes:
    return b"".join(
        (
            quote_signature, attestation_key, qe_report, qe_report_signature,
            struct.pack("<H", len(qe_auth_data)), qe_auth_data,
            struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(pck_chain_pem)), pck_chain_pem,
        )
    )  # fmt: skip
