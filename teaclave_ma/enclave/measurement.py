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

import errno
import hashlib
import os
import stat
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
    skipped, links and special files refused (a link could point anywhere at run time).

    The one walker of image content: ``build``, ``load_image`` and ``seal`` all read
    through it. Each entry is opened relative to its directory's descriptor without
    following links, and its type checked again on the open descriptor, so an entry
    swapped for a link or a device between the listing and the read is refused too.
    """
    if not root.is_dir():
        raise ImageFormatError(str(root), "not a directory")
    content: dict[str, bytes] = {}
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _walk(root_fd, "", content)
    finally:
        os.close(root_fd)
    return content


# O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def _walk(dir_fd: int, prefix: str, content: dict[str, bytes]) -> None:
    with os.scandir(dir_fd) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        relative = prefix + name
        if name.startswith(".") or name in SKIPPED_DIRS or name.endswith(".pyc"):
            continue
        try:
            relative.encode()
        except UnicodeEncodeError:
            raise ImageFormatError(
                ascii(relative), "file names in an enclave image must be valid UTF-8"
            ) from None
        kind = stat.S_IFMT(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        _refuse_kind(kind, relative)
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a link since it was listed
                _refuse_kind(stat.S_IFLNK, relative)
            raise
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
                raise ImageFormatError(relative, "changed while the image content was read")
            if kind == stat.S_IFDIR:
                _walk(fd, relative + "/", content)
            else:
                with os.fdopen(fd, "rb", closefd=False) as handle:
                    content[relative] = handle.read()
        finally:
            os.close(fd)


def _refuse_kind(kind: int, relative: str) -> None:
    if kind == stat.S_IFLNK:
        raise ImageFormatError(relative, "symbolic links are not allowed in an enclave image")
    if kind not in (stat.S_IFDIR, stat.S_IFREG):
        raise ImageFormatError(relative, "only regular files can be part of an enclave image")


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
