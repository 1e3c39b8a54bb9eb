"""One overwrite rule for every command that writes: an existing output needs --force."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from teaclave_ma.cli.main import _subparsers, build_parser, main
from teaclave_ma.crypto.author_key import generate_author_key, write_author_key

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two auditors' key pairs, a trust file of them and an author key."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("alice", "bob"):
        assert main(["auditor", "keygen", name, "--out", str(root)]) == 0
    assert main([
        "trust", "new", "--auditor", str(root / "alice.pub.pem"), "--auditor",
        str(root / "bob.pub.pem"), "--threshold", "1", "--out", str(root / "trust.yaml"),
    ]) == 0  # fmt: skip
    write_author_key(generate_author_key(), root / "author.key.pem")
    return root


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file at or below ``out``, by path."""
    files = [out] if out.is_file() else sorted(p for p in out.rglob("*") if p.is_file())
    return {str(path): path.read_bytes() for path in files}


def _manifest(_keys: Path, out: Path) -> list[str]:
    return ["manifest", "new", "--version", "1", "--valid-days", "3", "--out", str(out)]


# Each writes OUT (a file or a directory); the second run must be refused.
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "trust new": lambda keys, out: [
        "trust",
        "new",
        "--auditor",
        str(keys / "alice.pub.pem"),
        "--threshold",
        "1",
        "--out",
        str(out),
    ],
    "manifest new": _manifest,
    "sim init": lambda keys, out: ["sim", "init", str(out)],
    "build": lambda keys, out: [
        "build",
        str(SERVICES / "storage"),
        "--trust",
        str(keys / "trust.yaml"),
        "--signing-key",
        str(keys / "author.key.pem"),
        "--out",
        str(out),
    ],
    "auditor keygen": lambda keys, out: ["auditor", "keygen", "carol", "--out", str(out)],
    "author keygen": lambda keys, out: ["author", "keygen", "--out", str(out)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_existing_output_is_replaced_only_with_force(
    command: str, keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = COMMANDS[command](keys, out)
    assert main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "exists (use --force to replace it)" in err
    assert str(out) in err
    assert snapshot(out) == before
    for path in snapshot(out):
        Path(path).write_bytes(b"stale")
    assert main([*argv, "--force"]) == 0
    assert b"stale" not in snapshot(out).values()


def test_sim_init_and_build_accept_an_empty_existing_directory(keys: Path, tmp_path: Path) -> None:
    for command in ("sim init", "build"):
        out = tmp_path / command.replace(" ", "-")
        out.mkdir()
        assert main(COMMANDS[command](keys, out)) == 0


def test_sim_quote_refuses_to_replace_a_quote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", "init", str(tmp_path / "sim")]) == 0
    quote = tmp_path / "q.bin"
    argv = [
        "sim", "quote", str(tmp_path / "sim"), "--mr-enclave", "11" * 32,
        "--mr-signer", "22" * 32, "--out", str(quote),
    ]  # fmt: skip
    assert main(argv) == 0
    before = quote.read_bytes()
    assert main(argv) == 2
    assert "exists (use --force to replace it)" in capsys.readouterr().err
    assert quote.read_bytes() == before
    assert main([*argv, "--force"]) == 0


def test_sign_again_over_the_same_bytes_is_no_replacement(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, signatures = tmp_path / "manifest.yaml", tmp_path / "sigs"
    assert main(_manifest(keys, manifest)) == 0
    sign = ["manifest", "sign", str(manifest), "--key", str(keys / "alice.key.pem"),
            "--out-dir", str(signatures)]  # fmt: skip
    assert main(sign) == 0
    capsys.readouterr()
    assert main(sign) == 0  # Ed25519 is deterministic: the very same signature
    assert "(already there, unchanged)" in capsys.readouterr().out
    # the manifest changed: the old signature would be replaced, which needs --force
    manifest.write_bytes(manifest.read_bytes().replace(b"version: 1", b"version: 2"))
    (old,) = signatures.iterdir()
    before = old.read_bytes()
    assert main(sign) == 2
    assert "exists (use --force to replace it)" in capsys.readouterr().err
    assert old.read_bytes() == before
    assert main([*sign, "--force"]) == 0
    assert old.read_bytes() != before


def test_every_command_that_writes_offers_force() -> None:
    writers = {"trust new", "manifest new", "manifest sign", "sim init", "sim quote", "build",
               "auditor keygen", "author keygen"}  # fmt: skip
    parser = build_parser()
    with_force = {
        child.prog.removeprefix("teaclave-ma ")
        for child in _subparsers(parser)
        if "--force" in child._option_string_actions
    }
    assert writers <= with_force
