"""Serialising SGX reports, TD reports, and v3 (SGX) and v4 (TDX) quotes in Intel's layout."""

from __future__ import annotations

import struct

from teaclave_ma.attestation.quote import (
    ATTESTATION_KEY_ECDSA_P256,
    CERT_DATA_PCK_CHAIN,
    CERT_DATA_QE_REPORT,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
)
from teaclave_ma.errors import InputError
from teaclave_ma.identity import TdxIdentity

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
SGX_FLAGS_INIT = 0x01
SGX_FLAGS_DEBUG = 0x02
SGX_FLAGS_MODE64BIT = 0x04
SGX_XFRM_LEGACY = 0x03  # x87 and SSE state
TD15_BODY_TYPE = 3
# MRSIGNERSEAM of a TDX module Intel signed: zero (the TCB info's tdxModule.mrsigner says so).
INTEL_TDX_MODULE_MRSIGNER = bytes(48)


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


def header(*, qe_svn: int, pce_svn: int, tdx: bool = False, version: int | None = None) -> bytes:
    """A v3 SGX header, or with ``tdx`` a v4 (or the given ``version``) TDX header."""
    tee = TEE_TYPE_TDX if tdx else TEE_TYPE_SGX
    version = version or (4 if tdx else 3)
    return (
        struct.pack("<HHIHH", version, ATTESTATION_KEY_ECDSA_P256, tee, qe_svn, pce_svn)
        + INTEL_QE_VENDOR_ID
        + bytes(20)
    )


def td_report_body(
    identity: TdxIdentity,
    *,
    tee_tcb_svn: bytes,
    mr_seam: bytes,
    report_data: bytes,
    td15: bool = False,
    tee_tcb_svn2: bytes | None = None,
    mr_signer_seam: bytes = INTEL_TDX_MODULE_MRSIGNER,
    seam_attributes: bytes = bytes(8),
) -> bytes:
    """The 584-byte TD 1.0 report body of a v4 quote, or with ``td15`` the 648-byte TD 1.5
    body of a v5 quote (adding TEE_TCB_SVN2, by default TEE_TCB_SVN, and MRSERVICETD)
    behind its body descriptor."""
    if len(report_data) != 64:
        raise InputError("report_data", f"must be 64 bytes, got {len(report_data)}")
    body = b"".join(
        (
            tee_tcb_svn, mr_seam, mr_signer_seam, seam_attributes, identity.td_attributes, identity.xfam,
            identity.mr_td, bytes(48), bytes(48), bytes(48),
            identity.rtmr0, identity.rtmr1, identity.rtmr2, identity.rtmr3, report_data,
        )
    )  # fmt: skip
    if not td15:
        return body
    body += (tee_tcb_svn if tee_tcb_svn2 is None else tee_tcb_svn2) + bytes(48)
    return struct.pack("<HI", TD15_BODY_TYPE, len(body)) + body


def signature_data(
    *,
    quote_signature: bytes,
    attestation_key: bytes,
    qe_report: bytes,
    qe_report_signature: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
    wrapped: bool = False,
) -> bytes:
    """Signature data: in v3 the QE report certification follows the attestation key
    directly; ``wrapped`` (v4, v5) puts it inside certification data of type 6."""
    certification = _qe_certification(qe_report, qe_report_signature, qe_auth_data, pck_chain_pem)
    if wrapped:
        certification = struct.pack("<HI", CERT_DATA_QE_REPORT, len(certification)) + certification
    return quote_signature + attestation_key + certification


def _qe_certification(
    qe_report: bytes, qe_report_signature: bytes, qe_auth_data: bytes, pck_chain_pem: bytes
) -> bytes:
    return b"".join(
        (
            qe_report, qe_report_signature, struct.pack("<H", len(qe_auth_data)), qe_auth_data,
            struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(pck_chain_pem)), pck_chain_pem,
        )
    )  # fmt: skip
