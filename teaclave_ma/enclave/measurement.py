"""The simulated MRENCLAVE: SHA-256 over a canonical serialisation of the image content.

Algorithm (docs/enclave-image.md has it in full, for auditors who reimplement it)::

    h = SHA-256()
    h.update(b"teaclave-ma simulated MRENCLAVE v1\\0")
    for path in sorted(paths, key=UTF-8 bytes):   # POSIX relative paths inside content/
        h.update(u64le(len(path)) || path || u64le(len(data)) || data)
    MRENCLAVE = h.digest()

Only paths and bytes enter: not mtimes, modes, owners, the build directory, or the order
in which the file system lists entries.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from pathlib import Path

from teaclave_ma.enclave.errors import ImageFormatError

DOMAIN = b"teaclave-ma simulated MRENCLAVE v1\0"
SKIPPED_DIRS = frozenset({"__pycache__"})


def mr_enclave(content: Mapping[str, bytes]) -> bytes:
    digest = hashlib.sha256(DOMAIN)
    for path in sorted(content, key=lambda p: p.encode()):
        encoded = path.encode()
        data = content[path]
        digest.update(
            struct.pack("<Q", len(encoded)) + encoded + struct.pack("<Q", len(data)) + data
        )
    return digest.digest()


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by POSIX relative path; dotfiles and caches are
    skipped, links and special files refused (a link could point anywhere at run time)."""
    content: dict[str, bytes] = {}
    if not root.is_dir():
        raise ImageFormatError(str(root), "not a directory")
    stack = [root]
    while stack:
        directory = stack.pop()
        for entry in directory.iterdir():
            relative = entry.relative_to(root).as_posix()
            if entry.name.startswith(".") or entry.name in SKIPPED_DIRS or entry.suffix == ".pyc":
                continue
            try:
                relative.encode()
            except UnicodeEncodeError:
                raise ImageFormatError(
                    ascii(relative), "file names in an enclave image must be valid UTF-8"
                ) from None
            if entry.is_symlink():
                raise ImageFormatError(
                    relative, "symbolic links are not allowed in an enclave image"
                )
            if entry.is_dir():
                stack.append(entry)
            elif entry.is_file():
                content[relative] = entry.read_bytes()
            else:
                raise ImageFormatError(
                    relative, "only regular files can be part of an enclave image"
                )
    return content


def file_digests(content: Mapping[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in content.items()}


def describe_difference(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> str:
    """Which files differ between two contents, for an auditor's error message."""
    want, have = file_digests(expected), file_digests(actual)
    changed = sorted(p for p in want.keys() & have.keys() if want[p] != have[p])
    missing = sorted(want.keys() - have.keys())
    extra = sorted(have.keys() - want.keys())
    parts = []
    if changed:
        parts.append(f"changed: {', '.join(changed)}")
    if missing:
        parts.append(f"only in the rebuild: {', '.join(missing)}")
    if extra:
        parts.append(f"only in the image: {', '.join(extra)}")
    return "; ".join(parts) or "no file differs"
