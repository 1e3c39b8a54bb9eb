"""Detached manifest signatures: one small YAML file per auditor.

::

    # teaclave-ma detached manifest signature
    algorithm: ed25519
    key_id: 9f86d0...   # hex SHA-256 of the signer's raw public key
    signature: 5a1c...  # 128 hex: Ed25519 over the exact bytes of the manifest file

A directory of these (``<key_id>.sig``) is what services and ``manifest verify`` read.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from teaclave_ma.errors import InputError
from teaclave_ma.formats.strict import (
    dump_yaml,
    expect_hex,
    expect_keys,
    expect_str,
    parse_yaml_mapping,
    read_bounded,
)
from teaclave_ma.fsutil import atomic_write

SIGNATURE_SUFFIX = ".sig"
# A signature file is about 250 bytes; a directory holds one per auditor. Both bounds stop
# an endless file or directory before it is read.
MAX_SIGNATURE_BYTES = 4096
MAX_SIGNATURE_FILES = 256
HEADER = b"# teaclave-ma detached manifest signature\n"
_KEY_ID = re.compile(r"[0-9a-f]{64}")
_ALGORITHM = re.compile(r"ed25519")


class SignatureFormatError(InputError):
    """A signature file that cannot be read."""


@attrs.frozen
class DetachedSignature:
    key_id: str
    signature: bytes  # 64 bytes
    source: str = attrs.field(default="", eq=False)  # where it was read from, for messages

    def to_bytes(self) -> bytes:
        return HEADER + dump_yaml(
            {"algorithm": "ed25519", "key_id": self.key_id, "signature": self.signature.hex()}
        )


def parse_signature(data: bytes, what: str = "signature") -> DetachedSignature:
    try:
        mapping = parse_yaml_mapping(data, what, MAX_SIGNATURE_BYTES)
        expect_keys(mapping, what, ["algorithm", "key_id", "signature"])
        expect_str(mapping["algorithm"], f"{what}.algorithm", _ALGORITHM)
        return DetachedSignature(
            key_id=expect_str(mapping["key_id"], f"{what}.key_id", _KEY_ID),
            signature=expect_hex(mapping["signature"], f"{what}.signature", 64),
            source=what,
        )
    except SignatureFormatError:
        raise
    except InputError as exc:
        raise SignatureFormatError(exc.field, exc.problem) from exc


def signature_path(directory: Path, key_id: str) -> Path:
    return Path(directory) / f"{key_id}{SIGNATURE_SUFFIX}"


def write_signature(directory: Path, signature: DetachedSignature) -> Path:
    path = signature_path(directory, signature.key_id)
    atomic_write(path, signature.to_bytes())
    return path


def read_signature_dir(directory: Path) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of every ``*.sig`` file, sorted by name; a missing dir is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        problem = (
            "is not a directory; give the directory that holds the *.sig files"
            if directory.exists()
            else "signature directory does not exist"
        )
        raise SignatureFormatError(str(directory), problem)
    paths = sorted(path for path in directory.glob(f"*{SIGNATURE_SUFFIX}") if path.is_file())
    if len(paths) > MAX_SIGNATURE_FILES:
        raise SignatureFormatError(
            str(directory),
            f"{len(paths)} signature files, more than the limit of {MAX_SIGNATURE_FILES}",
        )
    try:
        return [(path.name, read_bounded(path, MAX_SIGNATURE_BYTES)) for path in paths]
    except InputError as exc:
        raise SignatureFormatError(exc.field, exc.problem) from exc
