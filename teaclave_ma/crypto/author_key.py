"""Enclave author keys: RSA-3072 with public exponent 3, as SGX's SIGSTRUCT requires.

MRSIGNER is SHA-256 of the key's modulus written as 384 little-endian bytes, exactly the
bytes SIGSTRUCT carries, so any party holding the public key can recompute it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from teaclave_ma.errors import InputError
from teaclave_ma.fsutil import atomic_write

KEY_BITS = 3072
MODULUS_BYTES = KEY_BITS // 8
PUBLIC_EXPONENT = 3


class AuthorKeyError(InputError):
    """An author key file that cannot be used for signing enclaves."""


def generate_author_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)


def write_author_key(key: rsa.RSAPrivateKey, path: Path, *, force: bool = False) -> None:
    """PKCS#8 PEM, mode 0600; an existing file is never replaced without ``force``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(Path(path), pem, mode=0o600, overwrite=force)


def _check(key: rsa.RSAPublicKey, what: str) -> rsa.RSAPublicKey:
    numbers = key.public_numbers()
    if key.key_size != KEY_BITS or numbers.e != PUBLIC_EXPONENT:
        raise AuthorKeyError(
            what,
            f"SGX enclave signing needs RSA-{KEY_BITS} with exponent {PUBLIC_EXPONENT}, got RSA-{key.key_size} e={numbers.e}",
        )
    return key


def load_author_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthorKeyError(str(path), f"not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthorKeyError(str(path), f"expected an RSA key, got {type(key).__name__}")
    _check(key.public_key(), str(path))
    return key


def load_author_public_key(path: Path) -> rsa.RSAPublicKey:
    """From a public key PEM, or the public half of a private key PEM."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        return load_author_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AuthorKeyError(str(path), f"not a PEM public key ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthorKeyError(str(path), f"expected an RSA key, got {type(key).__name__}")
    return _check(key, str(path))


def modulus_le(key: rsa.RSAPublicKey) -> bytes:
    return key.public_numbers().n.to_bytes(MODULUS_BYTES, "little")


def mr_signer(key: rsa.RSAPublicKey) -> bytes:
    return hashlib.sha256(modulus_le(key)).digest()
