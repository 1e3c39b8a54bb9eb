"""The auditor's command-line flow, end to end."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from teaclave_ma.cli.main import main
from teaclave_ma.formats.trust import parse_trust_file
from tests.helpers import run_cli


def test_keygen_writes_a_private_key_only_the_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run_cli(capsys, "auditor", "keygen", "alice", "--out", str(tmp_path), "--json")
    assert code == 0
    private, public = tmp_path / "alice.key.pem", tmp_path / "alice.pub.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    raw = serialization.load_pem_public_key(public.read_bytes()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert data["key_id"] == hashlib.sha256(raw).hexdigest()
    before = private.read_bytes()
    assert main(["auditor", "keygen", "alice", "--out", str(tmp_path)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert private.read_bytes() == before
    assert main(["auditor", "keygen", "alice", "--out", str(tmp_path), "--force"]) == 0
    assert private.read_bytes() != before


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_reads_the_public_key(tmp_path: Path) -> None:
    assert main(["auditor", "keygen", "bob", "--out", str(tmp_path)]) == 0
    result = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "bob.pub.pem"), "-noout", "-text"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert "ED25519" in result.stdout


def test_keygen_to_verify_two_of_three(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    for name in ("alice", "bob", "carol"):
        assert main(["auditor", "keygen", name, "--out", str(keys)]) == 0
    trust = tmp_path / "trust.yaml"
    assert main([
        "trust", "new", "--threshold", "2", "--out", str(trust),
        *[arg for name in ("alice", "bob", "carol") for arg in ("--auditor", str(keys / f"{name}.pub.pem"))],
    ]) == 0  # fmt: skip
    manifest = tmp_path / "manifest.yaml"
    assert (
        main(
            [
                "manifest",
                "new",
                "--version",
                "3",
                "--expires",
                "2030-01-01T00:00:00Z",
                "--out",
                str(manifest),
            ]
        )
        == 0
    )
    assert main([
        "manifest", "add", str(manifest), "--service", "storage", "--mr-enclave", "ab" * 32,
        "--mr-signer", "cd" * 32, "--isv-prod-id", "4", "--min-isv-svn", "1",
    ]) == 0  # fmt: skip
    signatures = tmp_path / "sigs"
    for name in ("alice", "carol"):
        assert (
            main(
                [
                    "manifest",
                    "sign",
                    str(manifest),
                    "--key",
                    str(keys / f"{name}.key.pem"),
                    "--out-dir",
                    str(signatures),
                ]
            )
            == 0
        )
    assert sorted(p.suffix for p in signatures.iterdir()) == [
        ".sig",
        ".sig",
    ]  # and no temp files left
    capsys.readouterr()
    verify = [
        "manifest",
        "verify",
        str(manifest),
        "--trust",
        str(trust),
        "--signatures",
        str(signatures),
    ]
    code, data = run_cli(capsys, *verify, "--now", "2029-01-01T00:00:00Z", "--json")
    assert code == 0
    assert (
        data["valid"] is True and data["version"] == 3 and data["expires"] == "2030-01-01T00:00:00Z"
    )
    assert len(data["signed_by"]) == 2  # type: ignore[arg-type]
    code, data = run_cli(capsys, *verify, "--now", "2031-01-01T00:00:00Z", "--json")
    assert code == 1
    assert any("expired" in reason for reason in data["reasons"])  # type: ignore[union-attr]
    next(signatures.iterdir()).unlink()
    code, data = run_cli(capsys, *verify, "--now", "2029-01-01T00:00:00Z", "--json")
    assert code == 1
    assert "1 of the required 2" in data["reasons"][0]  # type: ignore[index]
    manifest.write_bytes(manifest.read_bytes().replace(b"version: 3", b"version: 4"))
    assert main([*verify]) == 1


def test_sign_refuses_a_malformed_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["auditor", "keygen", "alice", "--out", str(tmp_path)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nexpires: soon\nenclaves: {}\n")
    assert (
        main(
            [
                "manifest",
                "sign",
                str(bad),
                "--key",
                str(tmp_path / "alice.key.pem"),
                "--out-dir",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "expires" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["verify", "sign", "add"])
def test_manifest_commands_refuse_endless_input_by_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A manifest the size of a disk is refused before it is read (TUF's endless data)."""
    huge = tmp_path / "manifest.yaml"
    with huge.open("wb") as handle:
        handle.truncate((16 << 20) + 1)  # sparse: costs no disk
    trust = Path(__file__).resolve().parents[2] / "keys" / "trust.yaml"
    arguments = {
        "verify": ["--trust", str(trust), "--signatures", str(tmp_path)],
        "sign": ["--key", str(tmp_path / "none.pem"), "--out-dir", str(tmp_path)],
        "add": ["--service", "storage", "--mr-enclave", "00" * 32, "--mr-signer", "00" * 32],
    }[command]
    assert main(["manifest", command, str(huge), *arguments]) == 2
    assert "larger than" in capsys.readouterr().err


def test_trust_show_refuses_an_oversized_trust_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "trust.yaml"
    with huge.open("wb") as handle:
        handle.truncate((1 << 20) + 1)
    assert main(["trust", "show", str(huge)]) == 2
    assert "larger than" in capsys.readouterr().err


def auditor_and_owner_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """keys/alice (an auditor) and keys/ops (an owner)."""
    keys = tmp_path / "keys"
    for name in ("alice", "ops"):
        assert main(["auditor", "keygen", name, "--out", str(keys)]) == 0
    capsys.readouterr()
    return keys


def test_trust_new_lists_the_kms_secret_owners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = auditor_and_owner_keys(tmp_path, capsys)
    trust = tmp_path / "trust.yaml"
    code, written = run_cli(
        capsys, "trust", "new", "--threshold", "1", "--out", str(trust), "--json",
        "--auditor", str(keys / "alice.pub.pem"), "--owner", str(keys / "ops.pub.pem"),
    )  # fmt: skip
    assert code == 0
    owners = written["owners"]
    assert isinstance(owners, list) and [owner["name"] for owner in owners] == ["ops"]
    parsed = parse_trust_file(trust.read_bytes())
    assert [owner.key_id for owner in parsed.owners] == [owners[0]["key_id"]]
    assert [auditor.name for auditor in parsed.auditors] == ["alice"]
    assert main(["trust", "show", str(trust)]) == 0
    assert "kms secret owners: 1" in capsys.readouterr().out


def test_trust_new_refuses_an_owner_listed_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = auditor_and_owner_keys(tmp_path, capsys)
    trust = tmp_path / "trust.yaml"
    code = main([
        "trust", "new", "--threshold", "1", "--out", str(trust),
        "--auditor", str(keys / "alice.pub.pem"),
        "--owner", str(keys / "ops.pub.pem"), "--owner", str(keys / "ops.pub.pem"),
    ])  # fmt: skip
    assert code == 2
    assert "owners[1]" in capsys.readouterr().err
    assert not trust.exists()
