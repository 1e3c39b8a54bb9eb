"""Enclave images: reproducible measurement, MRSIGNER, tamper detection, auditor review."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from teaclave_ma.cli.main import main
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.crypto.author_key import AuthorKeyError, generate_author_key, write_author_key
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.enclave.image import build_image, load_image, measure_source
from teaclave_ma.formats.trust import TrustedAuditor, TrustFile, TrustFileError, parse_trust_file
from teaclave_ma.runtime.service_runtime import load_entrypoint
from teaclave_ma.testing import AuditorPanel

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture(scope="module")
def author(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPrivateKey]:
    key = generate_author_key()
    path = tmp_path_factory.mktemp("author") / "author.key.pem"
    write_author_key(key, path)
    return path, key


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return AuditorPanel().write_trust(tmp_path_factory.mktemp("trust") / "trust.yaml")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    target = tmp_path / "src" / "storage"
    shutil.copytree(SERVICES / "storage", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def independent_mr_enclave(content_dir: Path) -> bytes:
    """The algorithm of docs/enclave-image.md, written again from the document."""
    files = sorted(
        (p.relative_to(content_dir).as_posix().encode(), p.read_bytes())
        for p in content_dir.rglob("*")
        if p.is_file()
    )
    h = hashlib.sha256(b"teaclave-ma simulated MRENCLAVE v1\x00")
    for path, data in files:
        h.update(struct.pack("<Q", len(path)) + path + struct.pack("<Q", len(data)) + data)
    return h.digest()


def test_identical_inputs_on_other_paths_and_times_measure_identically(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    # a second copy written in another order, with other mtimes
    other = tmp_path / "elsewhere" / "deep" / "storage"
    other.mkdir(parents=True)
    for path in sorted(source.iterdir(), reverse=True):
        (other / path.name).write_bytes(path.read_bytes())
        os.utime(other / path.name, (1_000_000, 1_000_000))
    first = build_image(
        source, trust, author[0], tmp_path / "out1", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    second = build_image(
        other, trust, author[0], tmp_path / "b" / "out2", now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    )
    assert first.identity == second.identity
    assert measure_source(other, trust, author[0]) == first.identity
    assert independent_mr_enclave(first.code_dir) == first.identity.mr_enclave


def test_mr_signer_is_sha256_of_the_little_endian_modulus(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    image = build_image(source, trust, author[0], tmp_path / "img")
    modulus = author[1].public_key().public_numbers().n.to_bytes(384, "little")
    assert image.identity.mr_signer == hashlib.sha256(modulus).digest()


@pytest.mark.parametrize(
    "change",
    ["code", "config", "trust"],
)
def test_one_changed_byte_changes_mr_enclave(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey], change: str
) -> None:
    before = measure_source(source, trust, author[0]).mr_enclave
    if change == "code":
        path = source / "storage_service.py"
        path.write_bytes(path.read_bytes().replace(b"64 * 1024", b"64 * 1025"))
    elif change == "config":
        path = source / "service.yaml"
        path.write_bytes(path.read_bytes().replace(b"isv_prod_id: 4", b"isv_prod_id: 5"))
    else:  # the same auditors but one, whose key is swapped
        original = parse_trust_file(trust.read_bytes())
        swapped = TrustedAuditor(original.auditors[0].name, AuditorSigningKey.generate().public_key)
        trust = tmp_path / "swapped-trust.yaml"
        trust.write_bytes(
            TrustFile(original.threshold, (swapped, *original.auditors[1:])).to_bytes()
        )
    assert measure_source(source, trust, author[0]).mr_enclave != before


def test_tampered_images_are_refused_at_load(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    def fresh(name: str) -> Path:
        return build_image(source, trust, author[0], tmp_path / name).root

    image = fresh("code")
    (image / "content" / "storage_service.py").write_text("print('evil')\n")
    with pytest.raises(ImageError) as caught:
        load_image(image)
    assert caught.value.check == "image_integrity"

    image = fresh("extra")
    (image / "content" / "backdoor.py").write_text("x = 1\n")
    with pytest.raises(ImageError, match="no longer matches"):
        load_image(image)

    image = fresh("sigstruct")
    record = json.loads((image / "sigstruct.json").read_text())
    record["isv_svn"] = 9
    (image / "sigstruct.json").write_text(json.dumps(record))
    with pytest.raises(ImageError) as caught:
        load_image(image)
    assert caught.value.check == "sigstruct_signature"

    image = fresh("modulus")
    other = generate_author_key().public_key().public_numbers().n.to_bytes(384, "little")
    record = json.loads((image / "sigstruct.json").read_text())
    record["modulus_le"] = other.hex()
    (image / "sigstruct.json").write_text(json.dumps(record))
    with pytest.raises(ImageError, match="does not verify"):
        load_image(image)


def test_build_refuses_bad_inputs(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    (source / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(ImageFormatError, match="symbolic links"):
        build_image(source, trust, author[0], tmp_path / "x")
    (source / "link.py").unlink()
    (source / "trust.yaml").write_text("mine")
    with pytest.raises(ImageFormatError, match="reserved"):
        build_image(source, trust, author[0], tmp_path / "x")
    (source / "trust.yaml").unlink()
    bad_trust = tmp_path / "bad-trust.yaml"
    bad_trust.write_bytes(trust.read_bytes().replace(b"threshold: 2", b"threshold: 0"))
    with pytest.raises(TrustFileError, match="threshold"):
        build_image(source, bad_trust, author[0], tmp_path / "x")
    weak = tmp_path / "weak.pem"
    write_author_key(rsa.generate_private_key(public_exponent=65537, key_size=2048), weak)
    with pytest.raises(AuthorKeyError, match="RSA-3072 with exponent 3"):
        build_image(source, trust, weak, tmp_path / "x")
    (source / "service.yaml").unlink()
    with pytest.raises(ImageFormatError, match=r"no service\.yaml"):
        build_image(source, trust, author[0], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_review_and_manifest_add_from_image(
    source: Path,
    tmp_path: Path,
    trust: Path,
    author: tuple[Path, rsa.RSAPrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "img"
    assert (
        main(
            [
                "build",
                str(source),
                "--trust",
                str(trust),
                "--signing-key",
                str(author[0]),
                "--out",
                str(image),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "auditor",
                "review",
                str(source),
                "--image",
                str(image),
                "--trust",
                str(trust),
                "--json",
            ]
        )
        == 0
    )
    entry = json.loads(capsys.readouterr().out)["entry"]
    assert entry["service"] == "storage" and entry["min_isv_svn"] == 1
    code_file = source / "storage_service.py"
    code_file.write_text(code_file.read_text() + "# one more line\n")
    assert (
        main(["auditor", "review", str(source), "--image", str(image), "--trust", str(trust)]) == 1
    )
    assert "changed: storage_service.py" in capsys.readouterr().err
    other_trust = AuditorPanel().write_trust(tmp_path / "t2.yaml")
    code_file.write_text(code_file.read_text().replace("# one more line\n", ""))
    assert (
        main(["auditor", "review", str(source), "--image", str(image), "--trust", str(other_trust)])
        == 1
    )
    assert "changed: trust.yaml" in capsys.readouterr().err
    manifest = tmp_path / "m.yaml"
    assert (
        main(["manifest", "new", "--version", "1", "--valid-days", "30", "--out", str(manifest)])
        == 0
    )
    assert main(["manifest", "add", str(manifest), "--from-image", str(image)]) == 0
    assert entry["mr_enclave"] in manifest.read_text()


def test_measure_prints_identical_json_for_image_and_source(
    source: Path,
    tmp_path: Path,
    trust: Path,
    author: tuple[Path, rsa.RSAPrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = build_image(source, trust, author[0], tmp_path / "img")
    capsys.readouterr()
    assert main(["measure", str(image.root), "--json"]) == 0
    from_image = capsys.readouterr().out
    assert (
        main(
            [
                "measure",
                str(source),
                "--trust",
                str(trust),
                "--signing-key",
                str(author[0]),
                "--json",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == from_image
    assert main(["measure", str(source)]) == 2


def test_author_keygen_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "author.pem"
    assert main(["author", "keygen", "--out", str(key)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    assert main(["author", "keygen", "--out", str(key)]) == 2
    assert key.read_bytes() == before


def test_code_runs_from_the_verified_bytes_not_a_second_read(
    source: Path, tmp_path: Path, trust: Path, author: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    image = load_image(build_image(source, trust, author[0], tmp_path / "img").root)
    swapped = image.code_dir / "storage_service.py"
    swapped.write_text("raise RuntimeError('swapped after verification')\n")
    build = load_entrypoint(image)  # still the measured code
    assert build.__name__ == "build"
    assert build.__module__.startswith("teaclave_service_storage")
