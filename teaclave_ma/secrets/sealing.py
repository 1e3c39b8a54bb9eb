"""Sealed files: a service's code or config shipped encrypted, opened only after attestation.

Each sealed file is ``MAGIC || SecretBox(key).encrypt(plaintext)`` (XSalsa20-Poly1305 with a
random 24-byte nonce, which the box output carries), stored in the image as
``PATH.sealed`` instead of ``PATH``. The image's measurement therefore covers the sealed
bytes: auditors measure exactly what runs. The key is random per image and is released by
the key-provisioning service, under the secret name ``sealing/SERVICE``, only to the
attested service itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nacl.exceptions
import nacl.secret
import nacl.utils

from teaclave_ma.enclave.image import SERVICE_CONFIG
from teaclave_ma.enclave.measurement import read_tree
from teaclave_ma.errors import InputError, VerificationError
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.fsutil import atomic_write, replaced_directory
from teaclave_ma.secrets.policy import SecretValue

MAGIC = b"teaclave-ma sealed v1\0"
SUFFIX = ".sealed"


class SealError(InputError):
    """Files that cannot be sealed or unsealed as asked."""


class SealedFileTampered(VerificationError):
    """A sealed file that does not authenticate under the image's key."""

    def __init__(self, path: str) -> None:
        super().__init__(
            "sealed_file",
            f"{path}: sealed content does not authenticate (tampered, or another key)",
        )


def sealing_secret_name(service: str) -> str:
    return f"sealing/{service}"


def new_key() -> SecretValue:
    return SecretValue(nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE))


def seal_bytes(key: SecretValue, plaintext: bytes) -> bytes:
    return MAGIC + bytes(nacl.secret.SecretBox(key.reveal()).encrypt(plaintext))


def unseal_bytes(key: SecretValue, sealed: bytes, path: str) -> bytes:
    if not sealed.startswith(MAGIC):
        raise SealError(path, "not a teaclave-ma sealed file")
    try:
        return bytes(nacl.secret.SecretBox(key.reveal()).decrypt(sealed[len(MAGIC) :]))
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise SealedFileTampered(path) from exc


def seal_source(
    service_dir: Path, files: Iterable[str], out_dir: Path, key: SecretValue
) -> list[str]:
    """Copy ``service_dir`` to ``out_dir`` with ``files`` (relative paths) sealed in place.

    The source is read through the image walker that ``build`` uses, so what it refuses
    (links, devices, names that are not UTF-8) is refused here before anything is written,
    and the copy is written from the walked bytes: a link cannot carry its target (say, the
    author's signing key) into the image. The plaintext of sealed files is never written
    to ``out_dir``.
    """
    service_dir, out_dir = Path(service_dir), Path(out_dir)
    content = read_tree(service_dir)
    if SERVICE_CONFIG not in content:
        raise SealError(str(service_dir), f"no {SERVICE_CONFIG}: not a service's source")
    # A copy that could never be built is refused before it is made.
    parse_service_config(content[SERVICE_CONFIG], str(service_dir / SERVICE_CONFIG))
    wanted = sorted(set(files))
    for relative in wanted:
        if relative not in content:
            raise SealError(relative, f"not a file inside {service_dir}")
        if relative == SERVICE_CONFIG:
            raise SealError(
                relative, f"{SERVICE_CONFIG} is read before provisioning and cannot be sealed"
            )
        if relative + SUFFIX in content:
            raise SealError(relative, f"{relative + SUFFIX} is already in {service_dir}")
    if out_dir.exists():
        raise SealError(str(out_dir), "already exists; choose a new directory for the sealed copy")
    with replaced_directory(out_dir) as staging:
        for relative, data in content.items():
            if relative in wanted:
                atomic_write(staging / (relative + SUFFIX), seal_bytes(key, data))
            else:
                atomic_write(staging / relative, data)
    return [relative + SUFFIX for relative in wanted]
