"""``manifest add --from-sigstruct``, TDX entries by flags and ``--from-quote``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.cli.main import main
from teaclave_ma.crypto.author_key import generate_author_key
from teaclave_ma.formats.manifest import AcceptedIdentity, AcceptedTdIdentity, parse_manifest

from .sigstruct_builder import MR_ENCLAVE, build_sigstruct

TD = {
    "mr_td": "11" * 48,
    "rtmr0": "22" * 48,
    "rtmr1": "33" * 48,
    "rtmr2": "44" * 48,
    "rtmr3": "55" * 48,
    "td_attributes": "0000001000000000",
    "xfam": "e702060000000000",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "manifest.yaml"
    assert (
        run(capsys, "manifest", "new", "--version", "1", "--valid-days", "9", "--out", path)[0] == 0
    )
    return path


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_author_key()


def td_flags(**override: str) -> list[str]:
    values = {**TD, **override}
    return [arg for name, value in values.items() for arg in (f"--{name.replace('_', '-')}", value)]


def test_from_sigstruct_fills_an_sgx_entry(
    manifest: Path, key: rsa.RSAPrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sig = tmp_path / "app.sig"
    sig.write_bytes(build_sigstruct(key, attributes=0x06))
    code, out, err = run(
        capsys,
        "manifest",
        "add",
        manifest,
        "--from-sigstruct",
        sig,
        "--service",
        "storage",
        "--json",
    )
    assert code == 0, err
    modulus = key.public_key().public_numbers().n.to_bytes(384, "little")
    expected = AcceptedIdentity(MR_ENCLAVE, hashlib.sha256(modulus).digest(), 7, 3, debug=True)
    assert json.loads(out)["entry"] == expected.to_document()
    assert parse_manifest(manifest.read_bytes()).enclaves == {"storage": (expected,)}


def test_from_sigstruct_needs_a_service_name(
    manifest: Path, key: rsa.RSAPrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sig = tmp_path / "app.sig"
    sig.write_bytes(build_sigstruct(key))
    code, _, err = run(capsys, "manifest", "add", manifest, "--from-sigstruct", sig)
    assert code == 2
    assert "--service: required: a SIGSTRUCT or a quote names no service" in err


def test_a_forged_sigstruct_is_refused_and_the_manifest_unchanged(
    manifest: Path, key: rsa.RSAPrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = build_sigstruct(key)
    data[128:512] = generate_author_key().public_key().public_numbers().n.to_bytes(384, "little")
    sig = tmp_path / "app.sig"
    sig.write_bytes(data)
    before = manifest.read_bytes()
    code, _, err = run(
        capsys, "manifest", "add", manifest, "--from-sigstruct", sig, "--service", "x"
    )
    assert code == 1
    assert "signature does not verify under its own modulus" in err
    assert manifest.read_bytes() == before


def test_a_measurement_flag_beside_a_file_is_refused(
    manifest: Path, key: rsa.RSAPrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sig = tmp_path / "app.sig"
    sig.write_bytes(build_sigstruct(key))
    code, _, err = run(
        capsys, "manifest", "add", manifest, "--from-sigstruct", sig, "--service", "x",
        "--mr-enclave", "00" * 32,
    )  # fmt: skip
    assert code == 2
    assert "--from-sigstruct gives the identity; drop --mr-enclave" in err


def test_a_tdx_entry_from_flags(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "manifest", "add", manifest, "--service", "kms", *td_flags(), "--json"
    )
    assert code == 0, err
    expected = AcceptedTdIdentity(**{name: bytes.fromhex(value) for name, value in TD.items()})
    assert json.loads(out)["entry"] == expected.to_document()
    assert parse_manifest(manifest.read_bytes()).enclaves == {"kms": (expected,)}


def test_a_tdx_entry_needs_every_register(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = td_flags()
    without_rtmr3 = flags[: flags.index("--rtmr3")] + flags[flags.index("--rtmr3") + 2 :]
    code, _, err = run(capsys, "manifest", "add", manifest, "--service", "kms", *without_rtmr3)
    assert code == 2
    assert "give --from-quote, or all of: --rtmr3" in err


def test_a_tdx_register_of_the_wrong_size_is_named(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "manifest", "add", manifest, "--service", "kms", *td_flags(xfam="e702")
    )
    assert code == 2
    assert "--xfam: expected 16 hex characters, got 4" in err


def test_sgx_flags_do_not_mix_into_a_tdx_entry(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "manifest", "add", manifest, "--service", "kms", *td_flags(), "--min-isv-svn", "1"
    )
    assert code == 2
    assert "a TDX entry gives the identity; drop --min-isv-svn" in err


def test_from_quote_of_a_real_td(
    manifest: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = shared_data / "tdx" / "quote.bin"
    code, out, err = run(
        capsys, "manifest", "add", manifest, "--from-quote", quote, "--service", "kms", "--json"
    )
    assert code == 0, err
    body = parse_quote(quote.read_bytes()).body
    entry = json.loads(out)["entry"]
    assert entry["mr_td"] == body.mr_td.hex()  # type: ignore[union-attr]
    assert entry["rtmr3"] == body.rtmr3.hex()  # type: ignore[union-attr]
    assert isinstance(parse_manifest(manifest.read_bytes()).enclaves["kms"][0], AcceptedTdIdentity)


def test_from_quote_of_a_real_sgx_enclave(
    manifest: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quote = shared_data / "sgx" / "quote.bin"
    code, out, err = run(
        capsys, "manifest", "add", manifest, "--from-quote", quote, "--service", "app", "--json"
    )
    assert code == 0, err
    identity = parse_quote(quote.read_bytes()).body.identity()
    assert json.loads(out)["entry"]["mr_enclave"] == identity.mr_enclave.hex()  # type: ignore[union-attr]


def test_from_quote_refuses_what_is_not_a_quote(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x04\x00" + bytes(40))
    code, _, err = run(capsys, "manifest", "add", manifest, "--from-quote", junk, "--service", "a")
    assert code == 2
    assert "header.user_data: needs 20 bytes at offset 28, only 14 left" in err
