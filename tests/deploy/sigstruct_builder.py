"""Builds a real-layout SGX SIGSTRUCT field by field, at the offsets of Intel's SDM
(vol. 3D, Enclave Signature Structure), written out here independently of the reader."""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MR_ENCLAVE = hashlib.sha256(b"an enclave's pages").digest()


def build_sigstruct(
    key: rsa.RSAPrivateKey,
    *,
    mr_enclave: bytes = MR_ENCLAVE,
    isv_prod_id: int = 7,
    isv_svn: int = 3,
    attributes: int = 0x04,  # MODE64BIT; 0x06 adds DEBUG
    date: tuple[int, int, int] = (0x2026, 0x12, 0x02),  # BCD, as the signing tools write it
    vendor: int = 0,
) -> bytearray:
    data = bytearray(1808)
    data[0:16] = bytes.fromhex("06000000e10000000000010000000000")
    struct.pack_into("<I", data, 16, vendor)
    struct.pack_into("<HBB", data, 20, *date)
    data[24:40] = bytes.fromhex("01010000600000006000000001000000")
    struct.pack_into("<I", data, 512, 3)
    struct.pack_into("<I", data, 900, 0)  # MISCSELECT
    struct.pack_into("<I", data, 904, 0xFFFFFFFF)  # MISCMASK
    struct.pack_into("<QQ", data, 928, attributes, 0x3)  # ATTRIBUTES: flags, XFRM
    struct.pack_into("<QQ", data, 944, 0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFFFFFFF)  # ATTRIBUTEMASK
    data[960:992] = mr_enclave
    struct.pack_into("<HH", data, 1024, isv_prod_id, isv_svn)
    public = key.public_key().public_numbers()
    data[128:512] = public.n.to_bytes(384, "little")
    sign(key, data)
    return data


def sign(key: rsa.RSAPrivateKey, data: bytearray) -> None:
    """(Re)sign ``data`` in place: bytes 0..128 and 900..1028, signature stored little-endian,
    with Q1 and Q2 as the CPU's EINIT wants them."""
    signature = key.sign(bytes(data[:128] + data[900:1028]), padding.PKCS1v15(), hashes.SHA256())
    value = int.from_bytes(signature, "big")
    modulus = key.public_key().public_numbers().n
    data[516:900] = value.to_bytes(384, "little")
    square = value * value
    data[1040:1424] = (square // modulus).to_bytes(384, "little")
    data[1424:1808] = ((square % modulus) * value // modulus).to_bytes(384, "little")
