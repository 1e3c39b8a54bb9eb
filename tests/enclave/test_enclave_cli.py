"""``teaclave-ma build``, ``measure``, ``author keygen``, ``auditor review`` and
``manifest add --from-image``, run in-process."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.cli.main import main
from teaclave_ma.crypto.author_key import generate_author_key, load_author_private_key
from teaclave_ma.enclave.image import load_image
from teaclave_ma.formats.manifest import AcceptedIdentity, parse_manifest
from teaclave_ma.testing import AuditorPanel
from tests.enclave.conftest import Author, copy_service


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def build(
    capsys: pytest.CaptureFixture[str], source: Path, trust: Path, key: Path, out: Path
) -> dict[str, object]:
    code, out_text, err = run(
        capsys, "build", source, "--trust", trust, "--signing-key", key, "--out", out, "--json"
    )
    assert code == 0, err
    result: dict[str, object] = json.loads(out_text)
    return result


@pytest.fixture(scope="module")
def image(trust: Path, author: Author, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The storage service, built once per module through the CLI's own code path."""
    source = copy_service("storage", tmp_path_factory.mktemp("built") / "storage")
    out = source.parent / "image"
    assert (
        main(
            [
                "build",
                str(source),
                "--trust",
                str(trust),
                "--signing-key",
                str(author.path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


# -- build and measure -----------------------------------------------------------------------


def test_build_reports_the_identity(
    source: Path, trust: Path, author: Author, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = build(capsys, source, trust, author.path, tmp_path / "image")
    image = load_image(tmp_path / "image")
    assert result == {
        "image": str(tmp_path / "image"),
        "service": "storage",
        **image.identity.describe(),
        "trusted_root": {"name": "Intel SGX Root CA", "sha256": INTEL_SGX_ROOT_CA.root_sha256.hex()},
        "simulated": False,
    }
    code, out, _ = run(
        capsys,
        "build",
        source,
        "--trust",
        trust,
        "--signing-key",
        author.path,
        "--out",
        tmp_path / "again",
    )
    assert code == 0
    assert out.startswith(f"built storage -> {tmp_path / 'again'}\n")
    assert f"mr_enclave   {image.identity.mr_enclave.hex()}" in out
    assert "trusts root  Intel SGX Root CA" in out


def test_measure_json_is_byte_identical_across_copies_paths_and_times(
    source: Path,
    trust: Path,
    author: Author,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `image` was built earlier in the module from another copy of the same service.
    other = tmp_path / "x" / "y" / "storage"
    other.mkdir(parents=True)
    for path in sorted(source.iterdir(), reverse=True):
        (other / path.name).write_bytes(path.read_bytes())
    build(capsys, other, trust, author.path, tmp_path / "fresh")
    code, from_old, _ = run(capsys, "measure", image, "--json")
    assert code == 0
    code, from_new, _ = run(capsys, "measure", tmp_path / "fresh", "--json")
    assert code == 0
    code, from_source, _ = run(
        capsys, "measure", other, "--trust", trust, "--signing-key", author.path, "--json"
    )
    assert code == 0
    assert from_old == from_new == from_source
    loaded = load_image(image)
    assert json.loads(from_old) == {**loaded.identity.describe(), **loaded.profile.describe()}


def test_measure_refuses_what_it_cannot_measure(
    source: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "measure", source)
    assert (code, out) == (2, "")
    assert "a source directory needs --trust and --signing-key" in err

    tampered = Path(shutil.copytree(image, tmp_path / "tampered"))
    (tampered / "content" / "storage_service.py").write_text("evil()\n")
    code, out, err = run(capsys, "measure", tampered, "--json")
    assert (code, out) == (1, "")
    assert err.startswith("refused: image content no longer matches its signed measurement")


def test_build_refusals_exit_2_and_name_the_problem(
    source: Path, trust: Path, author: Author, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (source / "trust.yaml").write_bytes(trust.read_bytes())
    code, _, err = run(
        capsys,
        "build",
        source,
        "--trust",
        trust,
        "--signing-key",
        author.path,
        "--out",
        tmp_path / "i",
    )
    assert code == 2
    assert "trust.yaml: this name is reserved" in err
    assert not (tmp_path / "i").exists()


# -- author keygen ---------------------------------------------------------------------------


def test_author_keygen_writes_a_private_0600_key_and_reports_its_mr_signer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys" / "author.pem"
    code, out, _ = run(capsys, "author", "keygen", "--out", path, "--json")
    assert code == 0
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_author_private_key(path)
    assert (key.key_size, key.public_key().public_numbers().e) == (3072, 3)
    modulus = key.public_key().public_numbers().n.to_bytes(384, "little")
    assert json.loads(out) == {"key": str(path), "mr_signer": hashlib.sha256(modulus).hexdigest()}
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()  # PKCS#8, unencrypted


def test_author_keygen_never_overwrites_without_force(
    author: Author,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Keygen itself is covered above; here a fixed key keeps the test fast.
    replacement = generate_author_key()
    monkeypatch.setattr("teaclave_ma.cli.enclave_cmd.generate_author_key", lambda: replacement)
    path = tmp_path / "author.pem"
    shutil.copyfile(author.path, path)
    path.chmod(0o600)
    before = path.read_bytes()

    code, out, err = run(capsys, "author", "keygen", "--out", path)
    assert (code, out) == (2, "")
    assert "exists (use --force to replace it)" in err
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["author.pem"]  # no temp file left

    code, _, _ = run(capsys, "author", "keygen", "--out", path, "--force")
    assert code == 0
    written = load_author_private_key(path)
    assert written.private_numbers() == replacement.private_numbers()
    assert path.stat().st_mode & 0o777 == 0o600


def test_author_keygen_refusal_names_the_existing_file(
    author: Author,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("teaclave_ma.cli.enclave_cmd.generate_author_key", lambda: author.key)
    path = tmp_path / "author.pem"
    path.write_bytes(b"existing")
    code, _, err = run(capsys, "author", "keygen", "--out", path)
    assert code == 2
    assert err == f"error: {path}: exists (use --force to replace it)\n"


# -- auditor review --------------------------------------------------------------------------


def review(
    capsys: pytest.CaptureFixture[str], source: Path, image: Path, trust: Path, *flags: str
) -> tuple[int, str, str]:
    return run(capsys, "auditor", "review", source, "--image", image, "--trust", trust, *flags)


def test_review_prints_the_manifest_entry_on_a_match(
    source: Path, trust: Path, image: Path, author: Author, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = review(capsys, source, image, trust, "--json")
    assert code == 0
    modulus = author.key.public_key().public_numbers().n.to_bytes(384, "little")
    assert json.loads(out) == {
        "reviewed": True,
        "entry": {
            "service": "storage",
            "mr_enclave": load_image(image).identity.mr_enclave.hex(),
            "mr_signer": hashlib.sha256(modulus).hexdigest(),
            "isv_prod_id": 4,
            "min_isv_svn": 1,
            "debug": False,
        },
        "trusted_root": {"name": "Intel SGX Root CA", "sha256": INTEL_SGX_ROOT_CA.root_sha256.hex()},
        "simulated": False,
    }
    code, out, _ = review(capsys, source, image, trust)
    assert code == 0
    assert f"teaclave-ma manifest add MANIFEST --from-image {image}" in out


def test_review_names_the_changed_source_file(
    source: Path, trust: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code_file = source / "storage_service.py"
    code_file.write_bytes(code_file.read_bytes().replace(b"64 * 1024", b"64 * 1025", 1))
    code, out, err = review(capsys, source, image, trust, "--json")
    assert (code, out) == (1, "")
    assert err.startswith("refused: storage: rebuilding from")
    assert err.rstrip().endswith("(changed: storage_service.py)")


def test_review_names_the_trust_file_when_it_differs(
    source: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-trust.yaml"
    other.write_bytes(AuditorPanel().trust_bytes)
    code, _, err = review(capsys, source, image, other)
    assert code == 1
    assert err.rstrip().endswith("(changed: trust.yaml)")


def test_review_names_added_and_removed_files(
    source: Path, trust: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (source / "storage_service.py").rename(source / "store.py")
    code, _, err = review(capsys, source, image, trust)
    assert code == 1
    assert "only in the rebuild: store.py; only in the image: storage_service.py" in err


def test_review_refuses_a_tampered_image_before_comparing(
    source: Path, trust: Path, image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = Path(shutil.copytree(image, tmp_path / "tampered"))
    record = json.loads((tampered / "sigstruct.json").read_bytes())
    record["isv_svn"] = 7
    (tampered / "sigstruct.json").write_text(json.dumps(record))
    code, _, err = review(capsys, source, tampered, trust)
    assert code == 1
    assert "SIGSTRUCT signature does not verify" in err
    code, _, err = review(capsys, source, tmp_path / "no-such-image", trust)
    assert code == 2
    assert "not an enclave image" in err


# -- manifest add --from-image ---------------------------------------------------------------


def test_manifest_add_from_image_fills_the_entry(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.yaml"
    code, _, _ = run(
        capsys, "manifest", "new", "--version", "1", "--valid-days", "30", "--out", manifest
    )
    assert code == 0
    identity = load_image(image).identity
    code, out, _ = run(capsys, "manifest", "add", manifest, "--from-image", image, "--json")
    assert code == 0
    expected = AcceptedIdentity(
        mr_enclave=identity.mr_enclave,
        mr_signer=identity.mr_signer,
        isv_prod_id=4,
        min_isv_svn=1,
        debug=False,
    )
    assert json.loads(out)["entry"] == expected.to_document()
    assert parse_manifest(manifest.read_bytes()).enclaves == {"storage": (expected,)}

    # --service and --min-isv-svn override what the image says
    code, _, _ = run(
        capsys,
        "manifest",
        "add",
        manifest,
        "--from-image",
        image,
        "--service",
        "storage2",
        "--min-isv-svn",
        "0",
    )
    assert code == 0
    entries = parse_manifest(manifest.read_bytes()).enclaves
    assert entries["storage2"] == (AcceptedIdentity(identity.mr_enclave, identity.mr_signer, 4, 0),)


def test_manifest_add_refuses_a_tampered_image(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.yaml"
    assert (
        run(capsys, "manifest", "new", "--version", "1", "--valid-days", "30", "--out", manifest)[0]
        == 0
    )
    before = manifest.read_bytes()
    tampered = Path(shutil.copytree(image, tmp_path / "tampered"))
    (tampered / "content" / "backdoor.py").write_text("x = 1\n")
    code, _, err = run(capsys, "manifest", "add", manifest, "--from-image", tampered)
    assert code == 1
    assert "no longer matches its signed measurement" in err
    assert manifest.read_bytes() == before


def test_public_key_pem_is_enough_to_measure_a_source(
    source: Path,
    trust: Path,
    author: Author,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    public = tmp_path / "author.pub.pem"
    public.write_bytes(
        author.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, out, _ = run(
        capsys, "measure", source, "--trust", trust, "--signing-key", public, "--json"
    )
    assert code == 0
    loaded = load_image(image)
    assert json.loads(out) == {**loaded.identity.describe(), **loaded.profile.describe()}
