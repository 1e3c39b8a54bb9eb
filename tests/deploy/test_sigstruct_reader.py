"""A real-layout SGX SIGSTRUCT read into the identity of the enclaves launched from it."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from teaclave_ma.crypto.author_key import generate_author_key
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.enclave.sigstruct_reader import parse_sgx_sigstruct

from .sigstruct_builder import MR_ENCLAVE, build_sigstruct, sign


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_author_key()


def test_each_field_is_read_from_its_offset(key: rsa.RSAPrivateKey) -> None:
    sigstruct = parse_sgx_sigstruct(bytes(build_sigstruct(key)))
    identity = sigstruct.identity
    assert identity.mr_enclave == MR_ENCLAVE
    modulus_le = key.public_key().public_numbers().n.to_bytes(384, "little")
    assert identity.mr_signer == hashlib.sha256(modulus_le).digest()
    assert (identity.isv_prod_id, identity.isv_svn, identity.debug) == (7, 3, False)
    assert sigstruct.date == "2026-12-02"
    assert sigstruct.attributes == 0x04


def test_the_debug_attribute_makes_a_debug_identity(key: rsa.RSAPrivateKey) -> None:
    assert parse_sgx_sigstruct(bytes(build_sigstruct(key, attributes=0x06))).identity.debug


def test_a_swapped_modulus_claims_another_mrsigner_and_is_refused(
    key: rsa.RSAPrivateKey,
) -> None:
    # The host's trick: keep the author's signature, put in the modulus of the key it wants
    # the auditors to pin. The signature no longer verifies.
    data = build_sigstruct(key)
    other = generate_author_key().public_key().public_numbers().n
    data[128:512] = other.to_bytes(384, "little")
    with pytest.raises(ImageError) as caught:
        parse_sgx_sigstruct(bytes(data), "app.sig")
    assert caught.value.check == "sigstruct_signature"
    assert "app.sig: the SIGSTRUCT's signature does not verify under its own modulus" in str(
        caught.value
    )


def test_a_changed_signed_field_is_refused(key: rsa.RSAPrivateKey) -> None:
    data = build_sigstruct(key)
    struct.pack_into("<H", data, 1026, 9)  # ISVSVN raised after signing
    with pytest.raises(ImageError, match="does not verify"):
        parse_sgx_sigstruct(bytes(data))
    sign(key, data)  # the author's own re-signing is of course fine
    assert parse_sgx_sigstruct(bytes(data)).identity.isv_svn == 9


@pytest.mark.parametrize(
    ("offset", "value", "field", "problem"),
    [
        (0, b"\x07", "app.sig: HEADER", "expected 06000000e1"),
        (24, b"\x02", "app.sig: HEADER2", "expected 0101000060"),
        (16, struct.pack("<I", 0x1234), "app.sig: VENDOR", "got 0x1234"),
        (512, struct.pack("<I", 65537), "app.sig: EXPONENT", "SGX requires 3, got 65537"),
        (20, struct.pack("<HBB", 0x2026, 0x1A, 0x02), "app.sig: DATE", "0x1a is not a BCD"),
    ],
)
def test_malformed_fields_are_named(
    key: rsa.RSAPrivateKey, offset: int, value: bytes, field: str, problem: str
) -> None:
    data = build_sigstruct(key)
    data[offset : offset + len(value)] = value
    with pytest.raises(ImageFormatError) as caught:
        parse_sgx_sigstruct(bytes(data), "app.sig")
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_a_vendor_of_intel_is_accepted(key: rsa.RSAPrivateKey) -> None:
    assert parse_sgx_sigstruct(bytes(build_sigstruct(key, vendor=0x8086))).vendor == 0x8086


@pytest.mark.parametrize("size", [0, 1807, 1809, 4096])
def test_a_wrong_size_is_refused(key: rsa.RSAPrivateKey, size: int) -> None:
    data = bytes(build_sigstruct(key)) + bytes(4096)
    with pytest.raises(ImageFormatError) as caught:
        parse_sgx_sigstruct(data[:size], "app.sig")
    assert str(caught.value) == f"app.sig: a SIGSTRUCT is exactly 1808 bytes, got {size}"
