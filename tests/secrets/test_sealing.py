from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from teaclave_ma.enclave.errors import ImageFormatError
from teaclave_ma.enclave.measurement import read_tree
from teaclave_ma.errors import InputError
from teaclave_ma.secrets.sealing import (
    MAGIC,
    SealedFileTampered,
    SealError,
    new_key,
    seal_bytes,
    seal_source,
    unseal_bytes,
)

SERVICES = Path(__file__).resolve().parents[2] / "services"


def test_round_trip_and_tamper_detection() -> None:
    key = new_key()
    sealed = seal_bytes(key, b"confidential config")
    assert sealed.startswith(MAGIC) and b"confidential" not in sealed
    assert unseal_bytes(key, sealed, "f") == b"confidential config"
    for position in (len(MAGIC), len(MAGIC) + 30, len(sealed) - 1):
        tampered = sealed[:position] + bytes([sealed[position] ^ 1]) + sealed[position + 1 :]
        with pytest.raises(SealedFileTampered) as caught:
            unseal_bytes(key, tampered, "config.yaml.sealed")
        assert caught.value.check == "sealed_file"
    with pytest.raises(SealedFileTampered):
        unseal_bytes(new_key(), sealed, "f")
    with pytest.raises(SealError, match="not a teaclave-ma sealed file"):
        unseal_bytes(key, b"plain text", "f")


def test_seal_source_never_writes_the_plaintext(tmp_path: Path) -> None:
    key = new_key()
    out = tmp_path / "sealed"
    assert seal_source(SERVICES / "report", ["config.yaml"], out, key) == ["config.yaml.sealed"]
    assert not (out / "config.yaml").exists()
    assert (out / "report.py").read_bytes() == (SERVICES / "report" / "report.py").read_bytes()
    plaintext = (SERVICES / "report" / "config.yaml").read_bytes()
    assert unseal_bytes(key, (out / "config.yaml.sealed").read_bytes(), "x") == plaintext
    with pytest.raises(SealError, match="already exists"):
        seal_source(SERVICES / "report", ["config.yaml"], out, key)
    for bad in ("service.yaml", "../kms/service.yaml", "missing.txt"):
        with pytest.raises(SealError):
            seal_source(SERVICES / "report", [bad], tmp_path / f"x-{bad.replace('/', '_')}", key)


def test_seal_source_writes_the_copy_from_what_the_image_walker_read(tmp_path: Path) -> None:
    source = tmp_path / "report"
    shutil.copytree(SERVICES / "report", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "lib").mkdir()
    (source / "lib" / "helpers.py").write_bytes(b"X = 1\n")
    (source / ".env").write_bytes(b"local only\n")
    out = tmp_path / "sealed"
    seal_source(source, ["config.yaml", "lib/helpers.py"], out, new_key())
    # exactly what build measures: the walked files, sealed ones replaced, dotfiles left out
    expected = {path for path in read_tree(source) if path not in ("config.yaml", "lib/helpers.py")}
    assert set(read_tree(out)) == expected | {"config.yaml.sealed", "lib/helpers.py.sealed"}
    assert not (out / ".env").exists()


def test_seal_source_refuses_a_name_taken_by_a_sealed_file(tmp_path: Path) -> None:
    source = write_source(tmp_path / "source", {"config.yaml.sealed": b"old"})
    with pytest.raises(SealError, match=r"config\.yaml\.sealed is already in") as caught:
        seal_source(source, ["config.yaml"], tmp_path / "out", new_key())
    assert caught.value.field == "config.yaml"
    assert not (tmp_path / "out").exists()


def write_source(root: Path, extra: dict[str, bytes]) -> Path:
    """A minimal service source: service.yaml, a config to seal, and ``extra`` files."""
    root.mkdir(parents=True)
    (root / "service.yaml").write_bytes((SERVICES / "report" / "service.yaml").read_bytes())
    (root / "config.yaml").write_bytes(b"customer: ACME Bank\n")
    for name, data in extra.items():
        (root / name).write_bytes(data)
    return root


def swap_for_link(path: Path) -> None:
    path.symlink_to(path.parent.parent / "author.key.pem")


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        (swap_for_link, "symbolic links are not allowed"),
        (os.mkfifo, "changed while the image content was read"),
    ],
    ids=["link", "fifo"],
)
def test_an_entry_swapped_between_listing_and_reading_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    swap: Callable[[Path], None],
    message: str,
) -> None:
    """The walker opens each entry without following links and checks the type of what it
    opened, so swapping ``config.yaml`` right after it was examined gains nothing."""
    (tmp_path / "author.key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    source = write_source(tmp_path / "source", {})
    real_stat = os.stat

    def stat_then_swap(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(name, *args, **kwargs)
        if name == "config.yaml":
            (source / name).unlink()
            swap(source / name)
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)
    with pytest.raises(ImageFormatError, match=message) as caught:
        seal_source(source, ["config.yaml"], tmp_path / "out", new_key())
    assert caught.value.field == "config.yaml"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("service_yaml", "message"),
    [(None, "no service.yaml: not a service's source"), (b"name: [", "not valid YAML")],
    ids=["missing", "invalid"],
)
def test_seal_source_refuses_a_source_that_could_not_be_built(
    tmp_path: Path, service_yaml: bytes | None, message: str
) -> None:
    source = write_source(tmp_path / "source", {})
    if service_yaml is None:
        (source / "service.yaml").unlink()
    else:
        (source / "service.yaml").write_bytes(service_yaml)
    with pytest.raises(InputError, match=message):
        seal_source(source, ["config.yaml"], tmp_path / "out", new_key())
    assert not (tmp_path / "out").exists()
