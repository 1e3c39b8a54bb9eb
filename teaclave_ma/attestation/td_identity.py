"""The TD measurement of a service image on the simulated TDX backend.

A real TD is measured by the TDX module (MRTD) and its firmware and kernel (RTMRs). The
simulation derives them from the image's measurement, so that a service built once can run
as an SGX enclave or as a TDX guest and each form has its own, stable identity::

    mr_td = SHA-384(b"teaclave-ma simulated MRTD v1\\0" || MRENCLAVE || MRSIGNER)
    rtmr0 = SHA-384(b"teaclave-ma simulated RTMR0 v1\\0" || isv_prod_id (u16le) || isv_svn (u16le))
    rtmr1 .. rtmr3 = 48 zero bytes
    td_attributes: SEPT_VE_DISABLE, plus DEBUG for a debug image; xfam: x87, SSE, AVX, AVX-512
"""

from __future__ import annotations

import hashlib
import struct

from teaclave_ma.identity import TD_ATTRIBUTES_DEBUG, SgxIdentity, TdxIdentity

SEPT_VE_DISABLE_ATTRIBUTES = bytes.fromhex("0000001000000000")
XFAM = bytes.fromhex("e702060000000000")


def simulated_td_identity(image: SgxIdentity) -> TdxIdentity:
    mr_td = hashlib.sha384(
        b"teaclave-ma simulated MRTD v1\0" + image.mr_enclave + image.mr_signer
    ).digest()
    rtmr0 = hashlib.sha384(
        b"teaclave-ma simulated RTMR0 v1\0" + struct.pack("<HH", image.isv_prod_id, image.isv_svn)
    ).digest()
    attributes = bytearray(SEPT_VE_DISABLE_ATTRIBUTES)
    if image.debug:
        attributes[0] |= TD_ATTRIBUTES_DEBUG
    return TdxIdentity(mr_td, rtmr0, bytes(48), bytes(48), bytes(48), bytes(attributes), XFAM)
