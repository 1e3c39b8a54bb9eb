"""Building, loading and reviewing enclave images through the library API."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from teaclave_ma.crypto.author_key import (
    AuthorKeyError,
    generate_author_key,
    load_author_public_key,
    write_author_key,
)
from teaclave_ma.enclave import sigstruct
from teaclave_ma.enclave.attestation_profile import INTEL_PROFILE
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.enclave.image import (
    build_image,
    enclave_config_bytes,
    load_image,
    measure_source,
    review,
)
from teaclave_ma.enclave.measurement import mr_enclave, read_tree
from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import EnclaveConfig
from teaclave_ma.formats.trust import TrustedAuditor, TrustFile, TrustFileError
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.runtime.service_runtime import load_entrypoint
from teaclave_ma.testing import AuditorPanel
from tests.enclave.conftest import DEV_TRUST, Author, copy_service

JAN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
JUN = dt.datetime(2026, 6, 30, 23, 59, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def other_author() -> rsa.RSAPrivateKey:
    return generate_author_key()


def copy_scrambled(source: Path, target: Path) -> Path:
    """The same files, created in reverse order with other mtimes and modes."""
    files = sorted((p for p in source.rglob("*") if p.is_file()), reverse=True)
    for index, path in enumerate(files):
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
        os.chmod(copy, 0o600 if index % 2 else 0o755)
        os.utime(copy, (1_000_000 + index, 1_000_000 + index))
    return target


def edit_json(path: Path, **changes: object) -> None:
    document = json.loads(path.read_bytes())
    document.update(changes)
    path.write_text(json.dumps(document, indent=1))


def resign(root: Path, key: rsa.RSAPrivateKey, record_enclave: EnclaveConfig | None = None) -> None:
    """Sign whatever ``content/`` now holds, as an attacker with an author key could:
    the measurement and signature are then consistent, so later checks must catch it."""
    old = sigstruct.parse_sigstruct((root / "sigstruct.json").read_bytes())
    measurement = mr_enclave(read_tree(root / "content"))
    record = sigstruct.sign(key, measurement, record_enclave or old.enclave, JAN)
    atomic_write(root / "sigstruct.json", record.to_bytes())


# -- reproducibility -------------------------------------------------------------------------


def test_identical_inputs_build_identical_images(
    source: Path, trust: Path, author: Author, tmp_path: Path
) -> None:
    (source / "static").mkdir()
    (source / "static" / "index.html").write_bytes(b"<p>hello</p>\n")
    other = copy_scrambled(source, tmp_path / "elsewhere" / "deeper" / "storage")
    first = build_image(source, trust, author.path, tmp_path / "out1", now=JAN)
    second = build_image(other, trust, author.path, tmp_path / "b" / "out2", now=JUN)
    assert first.identity == second.identity
    assert read_tree(first.code_dir) == read_tree(second.code_dir)
    assert measure_source(other, trust, author.path) == first.identity
    # sigstruct.json differs only in the date (and so the signature)
    one = json.loads((first.root / "sigstruct.json").read_bytes())
    two = json.loads((second.root / "sigstruct.json").read_bytes())
    assert (one["date"], two["date"]) == ("20260101", "20260630")
    assert {k for k in one if one[k] != two[k]} == {"date", "signature"}
    # PKCS#1 v1.5 is deterministic: the same date gives a byte-identical image
    third = build_image(other, trust, author.path, tmp_path / "out3", now=JAN)
    assert (third.root / "sigstruct.json").read_bytes() == (
        first.root / "sigstruct.json"
    ).read_bytes()


def test_the_build_adds_the_trust_file_and_enclave_config(
    source: Path, trust: Path, author: Author, tmp_path: Path
) -> None:
    image = build_image(source, trust, author.path, tmp_path / "image", now=JAN)
    files = {p.relative_to(image.root).as_posix() for p in image.root.rglob("*")}
    assert files == {
        "content",
        "content/service.yaml",
        "content/storage_service.py",
        "content/trust.yaml",
        "content/enclave.json",
        "content/attestation.json",
        "sigstruct.json",
    }
    assert image.profile == INTEL_PROFILE  # no --simulated-platform: Intel's root only
    assert (image.code_dir / "trust.yaml").read_bytes() == trust.read_bytes()
    assert image.trust_bytes == trust.read_bytes()
    assert (image.code_dir / "enclave.json").read_bytes() == (
        b'{\n "sgx.config_svn": 0,\n "sgx.debug": false,\n "sgx.isvprodid": 4,\n "sgx.isvsvn": 1\n}\n'
    )
    for name in ("service.yaml", "storage_service.py"):
        assert (image.code_dir / name).read_bytes() == (source / name).read_bytes()
    assert image.service.name == "storage"
    assert (image.identity.isv_prod_id, image.identity.isv_svn) == (4, 1)
    assert (image.identity.config_svn, image.identity.debug) == (0, False)


@pytest.mark.parametrize("service", ["authentication", "client", "frontend", "kms", "report"])
def test_every_example_service_builds_with_the_dev_trust_file(
    service: str, author: Author, tmp_path: Path
) -> None:
    source = copy_service(service, tmp_path / "src")
    image = build_image(source, DEV_TRUST, author.path, tmp_path / "image")
    assert load_image(image.root).identity == image.identity
    assert image.service.name == service


# -- what the measurement covers -------------------------------------------------------------


def swap_one_key(panel: AuditorPanel) -> bytes:
    """The panel's trust file with the first auditor's key replaced (same name, threshold)."""
    stranger = AuditorPanel(count=1, threshold=1).trust.auditors[0].public_key
    first, *rest = panel.trust.auditors
    return TrustFile(panel.threshold, (TrustedAuditor(first.name, stranger), *rest)).to_bytes()


@pytest.mark.parametrize(
    "change",
    [
        "code byte",
        "service.yaml byte",
        "service.yaml comment",
        "debug flag",
        "auditor key",
        "new file",
    ],
)
def test_one_change_changes_mr_enclave(
    change: str,
    source: Path,
    trust: Path,
    panel: AuditorPanel,
    author: Author,
    tmp_path: Path,
) -> None:
    before = measure_source(source, trust, author.path)
    code, config = source / "storage_service.py", source / "service.yaml"
    if change == "code byte":
        code.write_bytes(code.read_bytes().replace(b"64 * 1024", b"64 * 1025", 1))
    elif change == "service.yaml byte":
        config.write_bytes(config.read_bytes().replace(b"isv_prod_id: 4", b"isv_prod_id: 5"))
    elif change == "service.yaml comment":
        config.write_bytes(config.read_bytes() + b"# reviewed\n")
    elif change == "debug flag":
        config.write_bytes(config.read_bytes().replace(b"isv_svn: 1", b"isv_svn: 1\n  debug: true"))
    elif change == "auditor key":
        trust = tmp_path / "swapped.yaml"
        trust.write_bytes(swap_one_key(panel))
    else:
        (source / "notes.txt").write_bytes(b"")
    after = measure_source(source, trust, author.path)
    assert after.mr_enclave != before.mr_enclave
    assert after.mr_signer == before.mr_signer


def test_mr_signer_is_sha256_of_the_little_endian_modulus(
    source: Path, trust: Path, author: Author, other_author: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    n = author.key.public_key().public_numbers().n
    expected = hashlib.sha256(n.to_bytes(384, byteorder="little")).digest()
    image = build_image(source, trust, author.path, tmp_path / "image")
    assert image.identity.mr_signer == expected
    assert bytes.fromhex(
        json.loads((image.root / "sigstruct.json").read_bytes())["modulus_le"]
    ) == (n.to_bytes(384, "little"))
    # The public half alone measures the same; another author changes MRSIGNER only.
    public = tmp_path / "author.pub.pem"
    public.write_bytes(
        author.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert measure_source(source, trust, public) == image.identity
    write_author_key(other_author, tmp_path / "other.pem")
    other = build_image(source, trust, tmp_path / "other.pem", tmp_path / "other-image")
    assert other.identity.mr_enclave == image.identity.mr_enclave
    assert other.identity.mr_signer != image.identity.mr_signer


# -- tampering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(trust: Path, author: Author, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = copy_service("storage", tmp_path_factory.mktemp("pristine") / "storage")
    return build_image(source, trust, author.path, source.parent / "image", now=JAN).root


@pytest.fixture
def built(pristine: Path, source: Path, tmp_path: Path) -> Path:
    """A private copy of an image built from ``source`` (copied, not rebuilt: keys load slowly)."""
    return Path(shutil.copytree(pristine, tmp_path / "image"))


def add_backdoor(root: Path) -> None:
    (root / "content" / "backdoor.py").write_text("import os\n")


def add_nested_file(root: Path) -> None:
    (root / "content" / "sub").mkdir()
    (root / "content" / "sub" / "x.txt").write_text("x")


CONTENT_TAMPERING: dict[str, Callable[[Path], object]] = {
    "code edited": lambda root: (root / "content" / "storage_service.py").write_text("evil()\n"),
    "one byte appended": lambda root: (root / "content" / "service.yaml").write_bytes(
        (root / "content" / "service.yaml").read_bytes() + b"\n"
    ),
    "file added": add_backdoor,
    "nested file added": add_nested_file,
    "file removed": lambda root: (root / "content" / "storage_service.py").unlink(),
    "file renamed": lambda root: (root / "content" / "storage_service.py").rename(
        root / "content" / "storage_service2.py"
    ),
    "trust file replaced": lambda root: (root / "content" / "trust.yaml").write_bytes(
        AuditorPanel().trust_bytes
    ),
    "enclave.json edited": lambda root: (root / "content" / "enclave.json").write_bytes(
        (root / "content" / "enclave.json").read_bytes().replace(b"false", b"true")
    ),
}


@pytest.mark.parametrize("tamper", CONTENT_TAMPERING.values(), ids=CONTENT_TAMPERING.keys())
def test_tampered_content_is_refused(built: Path, tamper: Callable[[Path], object]) -> None:
    tamper(built)
    with pytest.raises(ImageError, match="no longer matches its signed measurement") as caught:
        load_image(built)
    assert caught.value.check == "image_integrity"


@pytest.mark.parametrize(
    "changes",
    [
        {"isv_svn": 2},
        {"isv_prod_id": 5},
        {"config_svn": 1},
        {"debug": True},
        {"date": "20300101"},
        {"mr_enclave": "00" * 32},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_edited_sigstruct_fields_break_the_signature(
    built: Path, changes: dict[str, object]
) -> None:
    edit_json(built / "sigstruct.json", **changes)
    with pytest.raises(ImageError, match="does not verify") as caught:
        load_image(built)
    assert caught.value.check == "sigstruct_signature"


def test_code_change_with_the_matching_mr_enclave_breaks_the_signature(built: Path) -> None:
    (built / "content" / "storage_service.py").write_text("evil()\n")
    edit_json(built / "sigstruct.json", mr_enclave=mr_enclave(read_tree(built / "content")).hex())
    with pytest.raises(ImageError) as caught:
        load_image(built)
    assert caught.value.check == "sigstruct_signature"


def test_flipped_signature_bit_is_refused(built: Path) -> None:
    record = json.loads((built / "sigstruct.json").read_bytes())
    signature = bytearray.fromhex(record["signature"])
    signature[-1] ^= 1
    edit_json(built / "sigstruct.json", signature=signature.hex())
    with pytest.raises(ImageError) as caught:
        load_image(built)
    assert caught.value.check == "sigstruct_signature"


def test_another_keys_modulus_is_refused(
    built: Path, author: Author, other_author: rsa.RSAPrivateKey
) -> None:
    foreign = other_author.public_key().public_numbers().n.to_bytes(384, "little")
    original = sigstruct.parse_sigstruct((built / "sigstruct.json").read_bytes())
    edit_json(built / "sigstruct.json", modulus_le=foreign.hex())
    tampered = sigstruct.parse_sigstruct((built / "sigstruct.json").read_bytes())
    assert tampered.mr_signer != original.mr_signer  # what the attacker would gain
    with pytest.raises(ImageError) as caught:
        load_image(built)
    assert caught.value.check == "sigstruct_signature"


def test_resigned_by_another_author_loads_with_another_mr_signer(
    built: Path, author: Author, other_author: rsa.RSAPrivateKey
) -> None:
    # Not an integrity failure: a new MRSIGNER is a new identity, which the manifest decides on.
    before = load_image(built).identity
    resign(built, other_author)
    after = load_image(built).identity
    assert after.mr_enclave == before.mr_enclave
    assert after.mr_signer != before.mr_signer


def test_signed_enclave_fields_must_agree_with_enclave_json(built: Path, author: Author) -> None:
    resign(built, author.key, EnclaveConfig(isv_prod_id=4, isv_svn=2))
    with pytest.raises(ImageError, match="enclave config differs") as caught:
        load_image(built)
    assert caught.value.check == "image_integrity"


def test_signed_enclave_fields_must_agree_with_service_yaml(built: Path, author: Author) -> None:
    # enclave.json matches the signed fields, but service.yaml says otherwise
    signed = EnclaveConfig(isv_prod_id=4, isv_svn=2)
    (built / "content" / "enclave.json").write_bytes(enclave_config_bytes(signed))
    resign(built, author.key, signed)
    with pytest.raises(ImageError, match="enclave config differs") as caught:
        load_image(built)
    assert caught.value.check == "image_integrity"


@pytest.mark.parametrize("required", ["service.yaml", "trust.yaml", "enclave.json"])
def test_signed_image_without_a_required_file_is_refused(
    built: Path, author: Author, required: str
) -> None:
    (built / "content" / required).unlink()
    resign(built, author.key)
    with pytest.raises(ImageFormatError, match="missing from the image") as caught:
        load_image(built)
    assert caught.value.field == required


def test_signed_image_with_an_invalid_trust_file_is_refused(built: Path, author: Author) -> None:
    trust_file = built / "content" / "trust.yaml"
    trust_file.write_bytes(trust_file.read_bytes().replace(b"threshold: 2", b"threshold: 9"))
    resign(built, author.key)
    with pytest.raises(TrustFileError, match="threshold"):
        load_image(built)


def test_files_that_are_never_measured_do_not_reach_the_enclave(built: Path) -> None:
    (built / "content" / ".env").write_text("injected")
    (built / "content" / "__pycache__").mkdir()
    (built / "content" / "__pycache__" / "storage_service.cpython-311.pyc").write_bytes(b"\0")
    image = load_image(built)
    assert set(image.content) == {
        "service.yaml",
        "storage_service.py",
        "trust.yaml",
        "enclave.json",
        "attestation.json",
    }


def test_links_in_an_image_are_refused(built: Path) -> None:
    (built / "content" / "storage_service.py").unlink()
    (built / "content" / "storage_service.py").symlink_to("/etc/hostname")
    with pytest.raises(ImageFormatError, match="symbolic links"):
        load_image(built)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda p: p.unlink(), "not an enclave image"),
        (lambda p: p.write_bytes(b"\xff not json"), "malformed SIGSTRUCT"),
        (lambda p: p.write_text("[]"), "malformed SIGSTRUCT"),
        (lambda p: edit_json(p, format="teaclave-ma sigstruct v2"), "unknown format"),
        (lambda p: edit_json(p, exponent=65537), "exponent must be 3"),
        (lambda p: edit_json(p, modulus_le="00" * 256), "field sizes"),
        (lambda p: edit_json(p, date="2026-1-1"), "field sizes"),
        (lambda p: edit_json(p, signature="zz"), "malformed SIGSTRUCT"),
        (lambda p: edit_json(p, isv_svn=70000), r"isv_svn: expected an integer in 0\.\.65535"),
        (lambda p: edit_json(p, config_svn=-1), r"config_svn: expected an integer in 0\.\.65535"),
        (lambda p: edit_json(p, isv_prod_id="4"), "isv_prod_id: expected an integer"),
        (lambda p: edit_json(p, debug="false"), "debug: expected true or false"),
    ],
    ids=[
        "missing",
        "not json",
        "not an object",
        "format",
        "exponent",
        "modulus size",
        "date",
        "signature hex",
        "isv_svn range",
        "config_svn range",
        "isv_prod_id type",
        "debug type",
    ],
)
def test_malformed_sigstruct_is_a_format_error(
    built: Path, mangle: Callable[[Path], object], message: str
) -> None:
    mangle(built / "sigstruct.json")
    with pytest.raises(ImageFormatError, match=message):
        load_image(built)


def test_an_image_without_content_is_refused(built: Path) -> None:
    shutil.rmtree(built / "content")
    with pytest.raises(ImageFormatError, match="not a directory"):
        load_image(built)


def test_code_runs_from_the_verified_bytes_not_a_second_read(built: Path) -> None:
    image = load_image(built)
    (image.code_dir / "storage_service.py").write_text("raise RuntimeError('swapped')\n")
    entry = load_entrypoint(image)  # compiled from what load_image measured
    assert entry.__name__ == "build"


# -- build refusals --------------------------------------------------------------------------


def rsa_key_file(path: Path, bits: int, exponent: int) -> Path:
    write_author_key(rsa.generate_private_key(public_exponent=exponent, key_size=bits), path)
    return path


@pytest.mark.parametrize(
    ("break_input", "error", "message"),
    [
        (
            lambda s, t: (s / "link.py").symlink_to(s / "storage_service.py"),
            ImageFormatError,
            "symbolic links",
        ),
        (lambda s, t: (s / "trust.yaml").write_bytes(t.read_bytes()), ImageFormatError, "reserved"),
        (lambda s, t: (s / "enclave.json").write_text("{}"), ImageFormatError, "reserved"),
        (lambda s, t: (s / "service.yaml").unlink(), ImageFormatError, r"no service\.yaml"),
        (
            lambda s, t: (s / "service.yaml").write_text("name: storage\n"),
            InputError,
            "enclave",
        ),
        (
            lambda s, t: t.write_bytes(t.read_bytes().replace(b"threshold: 2", b"threshold: 0")),
            TrustFileError,
            "threshold: must be between 1",
        ),
        (
            lambda s, t: t.write_bytes(t.read_bytes().replace(b"threshold: 2", b"threshold: 4")),
            TrustFileError,
            "threshold: must be between 1",
        ),
        (lambda s, t: t.write_bytes(b"threshold: [\n"), TrustFileError, "not valid YAML"),
    ],
    ids=[
        "symlink",
        "reserved trust.yaml",
        "reserved enclave.json",
        "no service.yaml",
        "bad service.yaml",
        "threshold 0",
        "threshold above auditors",
        "trust not yaml",
    ],
)
def test_build_refuses_bad_inputs_and_writes_nothing(
    source: Path,
    trust: Path,
    author: Author,
    tmp_path: Path,
    break_input: Callable[[Path, Path], object],
    error: type[Exception],
    message: str,
) -> None:
    trust = Path(shutil.copy(trust, tmp_path / "trust.yaml"))
    break_input(source, trust)
    with pytest.raises(error, match=message):
        build_image(source, trust, author.path, tmp_path / "out" / "image")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("bits", "exponent"), [(2048, 3), (3072, 65537)])
def test_build_refuses_author_keys_sgx_cannot_use(
    source: Path, trust: Path, tmp_path: Path, bits: int, exponent: int
) -> None:
    key = rsa_key_file(tmp_path / "weak.pem", bits, exponent)
    with pytest.raises(
        AuthorKeyError, match=f"RSA-3072 with exponent 3, got RSA-{bits} e={exponent}"
    ):
        build_image(source, trust, key, tmp_path / "image")
    with pytest.raises(AuthorKeyError):
        measure_source(source, trust, key)
    assert not (tmp_path / "image").exists()


def test_build_refuses_keys_that_are_not_rsa_private_keys(
    source: Path, trust: Path, author: Author, tmp_path: Path
) -> None:
    ed = tmp_path / "ed25519.pem"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AuthorKeyError, match="expected an RSA key"):
        build_image(source, trust, ed, tmp_path / "image")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AuthorKeyError, match="not an unencrypted PEM private key"):
        build_image(source, trust, garbage, tmp_path / "image")
    public = tmp_path / "public.pem"
    public.write_bytes(
        author.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert (
        load_author_public_key(public).public_numbers() == author.key.public_key().public_numbers()
    )
    with pytest.raises(AuthorKeyError):  # a public key measures but cannot sign
        build_image(source, trust, public, tmp_path / "image")


def test_a_failed_rebuild_leaves_the_previous_image_in_place(
    built: Path, source: Path, trust: Path, author: Author
) -> None:
    before = load_image(built).identity
    (source / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(ImageFormatError):
        build_image(source, trust, author.path, built)
    assert load_image(built).identity == before
    assert sorted(p.name for p in built.parent.iterdir()) == ["image", "src"]


# -- review ----------------------------------------------------------------------------------


def test_review_accepts_exactly_the_source_it_was_built_from(
    built: Path, source: Path, trust: Path, panel: AuditorPanel, tmp_path: Path
) -> None:
    image = load_image(built)
    assert review(source, trust, image) == image.identity

    code = source / "storage_service.py"
    code.write_bytes(code.read_bytes() + b"#")
    with pytest.raises(ImageError, match=r"changed: storage_service\.py") as caught:
        review(source, trust, image)
    assert caught.value.check == "review"
    code.write_bytes(code.read_bytes()[:-1])

    swapped = tmp_path / "swapped.yaml"
    swapped.write_bytes(swap_one_key(panel))
    with pytest.raises(ImageError, match=r"\(changed: trust\.yaml\)"):
        review(source, swapped, image)

    (source / "extra.py").write_text("")
    with pytest.raises(ImageError, match=r"only in the rebuild: extra\.py"):
        review(source, trust, image)
