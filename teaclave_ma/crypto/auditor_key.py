"""Auditor keys: Ed25519, PKCS#8 PEM private keys and SubjectPublicKeyInfo PEM public keys.

PEM encoding goes through pyca/cryptography so that ``openssl pkey`` reads the files;
signing and verification go through PyNaCl (libsodium).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from teaclave_ma.errors import InputError
from teaclave_ma.fsutil import atomic_write


class AuditorKeyError(InputError):
    """An auditor key file that cannot be used."""


def key_id(raw_public_key: bytes) -> str:
    """Hex SHA-256 of the raw 32-byte Ed25519 public key: how signatures name their signer."""
    return hashlib.sha256(raw_public_key).hexdigest()


@attrs.frozen
class AuditorPublicKey:
    raw: bytes  # 32 bytes

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    def to_pem(self) -> bytes:
        return ed25519.Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    @classmethod
    def from_pem(cls, data: bytes, what: str = "public key") -> AuditorPublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise AuditorKeyError(what, f"not a PEM public key ({exc})") from exc
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise AuditorKeyError(what, f"expected an Ed25519 key, got {type(key).__name__}")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@attrs.frozen(repr=False)
class AuditorSigningKey:
    seed: bytes  # 32 bytes; kept out of repr so it never lands in a log

    def __repr__(self) -> str:
        return f"AuditorSigningKey(key_id={self.public_key.key_id[:16]}...)"

    @classmethod
    def generate(cls) -> AuditorSigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> AuditorPublicKey:
        return AuditorPublicKey(bytes(nacl.signing.SigningKey(self.seed).verify_key))

    def sign(self, message: bytes) -> bytes:
        return nacl.signing.SigningKey(self.seed).sign(message).signature

    def to_pem(self) -> bytes:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.seed).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes, what: str = "private key") -> AuditorSigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise AuditorKeyError(
                what, f"not an unencrypted PKCS#8 PEM private key ({exc})"
            ) from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise AuditorKeyError(what, f"expected an Ed25519 key, got {type(key).__name__}")
        return cls(
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )

    @classmethod
    def load(cls, path: Path) -> AuditorSigningKey:
        return cls.from_pem(Path(path).read_bytes(), str(path))


def write_key_pair(
    key: AuditorSigningKey, directory: Path, name: str, *, force: bool
) -> tuple[Path, Path]:
    """Write ``NAME.key.pem`` (mode 0600) and ``NAME.pub.pem``; refuse to clobber without force."""
    private_path = Path(directory) / f"{name}.key.pem"
    public_path = Path(directory) / f"{name}.pub.pem"
    if not force:
        for path in (private_path, public_path):
            if path.exists():
                raise FileExistsError(17, "exists (use --force to replace it)", str(path))
    atomic_write(private_path, key.to_pem(), mode=0o600, overwrite=force)
    atomic_write(public_path, key.public_key.to_pem(), overwrite=True)
    return private_path, public_path
