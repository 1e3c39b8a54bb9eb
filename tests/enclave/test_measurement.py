"""The simulated MRENCLAVE: the algorithm of docs/enclave-image.md, written again here from
the document alone, must agree with the library on tricky inputs and on a real image."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teaclave_ma.enclave.errors import ImageFormatError
from teaclave_ma.enclave.image import build_image
from teaclave_ma.enclave.measurement import describe_difference, mr_enclave, read_tree
from tests.enclave.conftest import Author

# File names whose order differs between sorting schemes: "/" (0x2F) sorts after "-" and
# "." as a byte, but a component-wise sort would put "a/b" first; U+FF21 sorts before U+1F600
# by UTF-8 bytes (and code point) but after it in UTF-16.
TRICKY_NAMES = (
    "a-b.txt",
    "a.txt",
    "a/b.txt",
    "a/b/c.txt",
    "B.txt",
    "\u00e9t\u00e9.txt",
    "\uff21.txt",
    "\U0001f600.txt",
    "z z.txt",
)


def u64le(n: int) -> bytes:
    return n.to_bytes(8, "little")


def reimplemented_mr_enclave(content_dir: Path) -> bytes:
    """docs/enclave-image.md, section MRENCLAVE, with the skip rules of section Layout."""
    files: list[tuple[bytes, bytes]] = []
    for directory, subdirs, names in os.walk(content_dir):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
        for name in names:
            if name.startswith(".") or name == "__pycache__" or name.endswith(".pyc"):
                continue
            full = Path(directory) / name
            relative = full.relative_to(content_dir).as_posix().encode("utf-8")
            files.append((relative, full.read_bytes()))
    h = hashlib.sha256()
    h.update(b"teaclave-ma simulated MRENCLAVE v1" + b"\x00")
    for path, data in sorted(files):  # tuples of bytes: sorted by the UTF-8 path bytes
        h.update(u64le(len(path)) + path + u64le(len(data)) + data)
    return h.digest()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_known_answers() -> None:
    # The vectors printed in docs/enclave-image.md; a change to the algorithm breaks them.
    assert (
        mr_enclave({}).hex() == "6ad309027868188fc96738f7ca5860c6c48e64a79293f3ce5b479d8df23bcef5"
    )
    assert (
        mr_enclave({"a.py": b"x"}).hex()
        == "30760e13c7fb8656ff8afad9522a660a01097f1b48cdbf2edb04c51022d9d87a"
    )
    assert (
        mr_enclave({"service.yaml": b"name: demo\n", "sub/data.bin": b"\0\1", "app.py": b""}).hex()
        == "537e021e05b7575053ecddaebff13f93dc19af95a0c9fa5ddbc829174107bb90"
    )


def test_reimplementation_agrees_on_tricky_names_and_skipped_files(tmp_path: Path) -> None:
    root = write_files(
        tmp_path / "tree",
        {name: f"content of {name}\n".encode() for name in TRICKY_NAMES}
        | {
            "empty.bin": b"",
            ".hidden": b"skipped",
            ".git/config": b"skipped",
            "__pycache__/m.cpython-311.pyc": b"skipped",
            "sub/__pycache__/x.txt": b"skipped",
            "stale.pyc": b"skipped",
        },
    )
    (root / "empty-dir").mkdir()
    content = read_tree(root)
    assert sorted(content) == sorted([*TRICKY_NAMES, "empty.bin"])
    assert mr_enclave(content) == reimplemented_mr_enclave(root)


def test_the_sort_is_by_utf8_bytes_not_by_insertion_or_utf16(tmp_path: Path) -> None:
    content = {name: name.encode() for name in TRICKY_NAMES}
    expected = mr_enclave(content)
    assert mr_enclave(dict(reversed(list(content.items())))) == expected

    def utf16_order(name: str) -> bytes:
        return name.encode("utf-16-be")

    h = hashlib.sha256(b"teaclave-ma simulated MRENCLAVE v1\x00")
    for name in sorted(content, key=utf16_order):
        path = name.encode()
        h.update(u64le(len(path)) + path + u64le(len(content[name])) + content[name])
    assert h.digest() != expected  # the two orders differ on these names, so the key matters


def test_skipped_files_do_not_change_the_measurement(tmp_path: Path) -> None:
    root = write_files(tmp_path / "tree", {"service.yaml": b"name: x\n", "app.py": b"pass\n"})
    before = mr_enclave(read_tree(root))
    write_files(root, {".env": b"SECRET=1", "__pycache__/app.cpython-311.pyc": b"\0", "x.pyc": b""})
    (root / "empty").mkdir()
    assert mr_enclave(read_tree(root)) == before


@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
        st.binary(max_size=16),
        max_size=6,
    )
)
@settings(max_examples=200, deadline=None)
def test_mr_enclave_matches_the_documented_formula(content: dict[str, bytes]) -> None:
    h = hashlib.sha256(b"teaclave-ma simulated MRENCLAVE v1\x00")
    for path, data in sorted((p.encode(), d) for p, d in content.items()):
        h.update(u64le(len(path)) + path + u64le(len(data)) + data)
    assert mr_enclave(content) == h.digest()
    assert mr_enclave(dict(reversed(list(content.items())))) == h.digest()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"ab": b"c"}, {"a": b"bc"}),  # bytes moved between path and data
        ({"a": b"b", "c": b""}, {"a": b"", "bc": b""}),  # bytes moved across files
        ({"a": b""}, {}),  # an empty file still counts
        ({"a": b"x"}, {"a": b"x\n"}),
    ],
)
def test_framing_keeps_different_contents_apart(
    first: dict[str, bytes], second: dict[str, bytes]
) -> None:
    assert mr_enclave(first) != mr_enclave(second)


def test_read_tree_refuses_links(tmp_path: Path) -> None:
    root = write_files(tmp_path / "tree", {"app.py": b"pass\n", "sub/data": b"1"})
    for link, target in (
        ("to-file.py", root / "app.py"),
        ("to-dir", root / "sub"),
        ("gone", root / "nowhere"),
    ):
        (root / link).symlink_to(target)
        with pytest.raises(ImageFormatError, match="symbolic links") as caught:
            read_tree(root)
        assert caught.value.field == link
        (root / link).unlink()
    (root / "sub" / "deep").symlink_to("/etc/passwd")
    with pytest.raises(ImageFormatError) as caught:
        read_tree(root)
    assert caught.value.field == "sub/deep"


def test_read_tree_refuses_special_files(tmp_path: Path) -> None:
    root = write_files(tmp_path / "tree", {"app.py": b"pass\n"})
    os.mkfifo(root / "pipe")
    with pytest.raises(ImageFormatError, match="only regular files") as caught:
        read_tree(root)
    assert caught.value.field == "pipe"


def test_read_tree_refuses_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = write_files(tmp_path / "tree", {"app.py": b"pass\n"})
    (root / os.fsdecode(b"bad\xff.py")).write_bytes(b"pass\n")
    with pytest.raises(ImageFormatError, match="valid UTF-8"):
        read_tree(root)


def test_read_tree_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError, match="not a directory"):
        read_tree(tmp_path / "missing")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ImageFormatError, match="not a directory"):
        read_tree(tmp_path / "file")


def test_describe_difference_names_every_differing_file() -> None:
    rebuilt = {"same.py": b"1", "code.py": b"new", "gone.py": b"x"}
    image = {"same.py": b"1", "code.py": b"old", "added.py": b"y"}
    assert describe_difference(rebuilt, image) == (
        "changed: code.py; only in the rebuild: gone.py; only in the image: added.py"
    )
    assert describe_difference(rebuilt, rebuilt) == "no file differs"


def test_reimplementation_gives_the_images_mr_enclave(
    source: Path, trust: Path, author: Author, tmp_path: Path
) -> None:
    write_files(source, {name: b"data\n" for name in TRICKY_NAMES} | {".skipped": b"x"})
    image = build_image(source, trust, author.path, tmp_path / "image")
    assert reimplemented_mr_enclave(image.code_dir) == image.identity.mr_enclave
    assert not (image.code_dir / ".skipped").exists()
