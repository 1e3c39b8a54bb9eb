"""Reads a real SGX SIGSTRUCT (the 1808-byte enclave signature structure that
gramine-sgx-sign and the SGX SDK's signing tool write to ``*.sig``) into the identity an
enclave launched from it has (Sans-IO: bytes in, identity out).

Layout (Intel SDM vol. 3D, "Enclave Signature Structure"; integers little-endian)::

       0 HEADER (16)      16 VENDOR u32     20 DATE u32 (BCD: year u16, month u8, day u8)
      24 HEADER2 (16)     40 SWDEFINED u32  44 reserved (84)
     128 MODULUS (384)   512 EXPONENT u32  516 SIGNATURE (384)
     900 MISCSELECT u32  904 MISCMASK u32  908 reserved (20)
     928 ATTRIBUTES (16) 944 ATTRIBUTEMASK (16)  960 ENCLAVEHASH (32)  992 reserved (32)
    1024 ISVPRODID u16  1026 ISVSVN u16   1028 reserved (12)
    1040 Q1 (384)       1424 Q2 (384)     = 1808

MRENCLAVE is ENCLAVEHASH; MRSIGNER is SHA-256 of MODULUS as stored. The signature is
RSASSA-PKCS1-v1_5 with SHA-256 over bytes 0..128 and 900..1028, checked here so that a
SIGSTRUCT whose modulus was swapped (claiming another author's MRSIGNER) is refused.
"""

from __future__ import annotations

import hashlib
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from teaclave_ma.attestation.quote import SGX_FLAGS_DEBUG
from teaclave_ma.crypto.author_key import MODULUS_BYTES, PUBLIC_EXPONENT
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.identity import SgxIdentity

SIGSTRUCT_SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
INTEL_VENDOR = 0x8086

_DATE = 20
_MODULUS = 128
_EXPONENT = 512
_SIGNATURE = 516
_MISCSELECT = 900
_ATTRIBUTES = 928
_ENCLAVEHASH = 960
_ISVPRODID = 1024
_SIGNED_TAIL_END = 1028


@attrs.frozen
class SgxSigstruct:
    """What a SIGSTRUCT fixes about the enclaves launched from it."""

    identity: SgxIdentity
    vendor: int
    date: str  # YYYY-MM-DD, as the signing tool wrote it
    misc_select: int
    attributes: int  # the ATTRIBUTES flags (low 8 bytes)

    def describe(self) -> dict[str, object]:
        return {
            **self.identity.describe(),
            "vendor": f"{self.vendor:#06x}",
            "date": self.date,
            "misc_select": f"{self.misc_select:#010x}",
            "attributes": f"{self.attributes:#018x}",
        }


def _bcd(value: int, digits: int, field: str) -> int:
    text = f"{value:0{digits}x}"
    if not text.isdigit():
        raise ImageFormatError(field, f"{value:#x} is not a BCD date field")
    return int(text)


def _date(data: bytes, what: str) -> str:
    year, month, day = struct.unpack_from("<HBB", data, _DATE)
    field = f"{what}: DATE"
    return f"{_bcd(year, 4, field):04d}-{_bcd(month, 2, field):02d}-{_bcd(day, 2, field):02d}"


def _verify_signature(data: bytes, modulus: bytes, what: str) -> None:
    key = rsa.RSAPublicNumbers(PUBLIC_EXPONENT, int.from_bytes(modulus, "little")).public_key()
    signature = data[_SIGNATURE : _SIGNATURE + MODULUS_BYTES][::-1]  # stored little-endian
    signed = data[:_MODULUS] + data[_MISCSELECT:_SIGNED_TAIL_END]
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError) as exc:
        raise ImageError(
            "sigstruct_signature",
            f"{what}: the SIGSTRUCT's signature does not verify under its own modulus "
            "(the modulus, and with it MRSIGNER, or a signed field was changed)",
        ) from exc


def parse_sgx_sigstruct(data: bytes, what: str = "SIGSTRUCT") -> SgxSigstruct:
    """The identity fixed by the SIGSTRUCT in ``data``; refuses anything that is not one,
    or whose signature does not verify."""
    if len(data) != SIGSTRUCT_SIZE:
        raise ImageFormatError(
            what, f"a SIGSTRUCT is exactly {SIGSTRUCT_SIZE} bytes, got {len(data)}"
        )
    for offset, expected, name in ((0, HEADER, "HEADER"), (24, HEADER2, "HEADER2")):
        have = data[offset : offset + len(expected)]
        if have != expected:
            raise ImageFormatError(
                f"{what}: {name}", f"expected {expected.hex()}, got {have.hex()}"
            )
    (vendor,) = struct.unpack_from("<I", data, 16)
    if vendor not in (0, INTEL_VENDOR):
        raise ImageFormatError(f"{what}: VENDOR", f"expected 0 or 0x8086, got {vendor:#x}")
    (exponent,) = struct.unpack_from("<I", data, _EXPONENT)
    if exponent != PUBLIC_EXPONENT:
        raise ImageFormatError(
            f"{what}: EXPONENT", f"SGX requires {PUBLIC_EXPONENT}, got {exponent}"
        )
    date = _date(data, what)
    modulus = data[_MODULUS : _MODULUS + MODULUS_BYTES]
    _verify_signature(data, modulus, what)
    (misc_select,) = struct.unpack_from("<I", data, _MISCSELECT)
    (attributes,) = struct.unpack_from("<Q", data, _ATTRIBUTES)
    isv_prod_id, isv_svn = struct.unpack_from("<HH", data, _ISVPRODID)
    identity = SgxIdentity(
        mr_enclave=data[_ENCLAVEHASH : _ENCLAVEHASH + 32],
        mr_signer=hashlib.sha256(modulus).digest(),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        debug=bool(attributes & SGX_FLAGS_DEBUG),
    )
    return SgxSigstruct(identity, vendor, date, misc_select, attributes)
