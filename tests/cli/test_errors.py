"""Errors that say what is wrong: which file, which field, which line, and the right exit code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from teaclave_ma.cli.main import main
from teaclave_ma.crypto.author_key import generate_author_key, write_author_key
from teaclave_ma.testing import AuditorPanel
from tests.helpers import run_cli

SERVICES = Path(__file__).resolve().parents[2] / "services"
GOOD = b"version: 7\nexpires: 2030-01-01T00:00:00Z\nenclaves: {}\n"


@pytest.fixture
def panel(tmp_path: Path) -> AuditorPanel:
    panel = AuditorPanel()
    panel.write_trust(tmp_path / "trust.yaml")
    return panel


def verify(tmp_path: Path, *flags: str) -> list[str]:
    return [
        "manifest", "verify", str(tmp_path / "m.yaml"), "--trust", str(tmp_path / "trust.yaml"),
        "--signatures", str(tmp_path / "sigs"), "--now", "2029-01-01T00:00:00Z", *flags,
    ]  # fmt: skip


def test_a_signed_manifest_that_does_not_parse_is_unusable_input_naming_the_yaml_problem(
    panel: AuditorPanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = b"version: 7\nexpires: 2030-01-01T00:00:00Z\nenclaves: {storage: [\n"
    (tmp_path / "m.yaml").write_bytes(broken)
    panel.write_signatures(tmp_path / "sigs", broken, by=[0, 1])
    code, data = run_cli(capsys, *verify(tmp_path, "--json"))
    assert code == 2
    assert data["checks"] == ["format"]
    (reason,) = data["reasons"]  # type: ignore[misc]
    assert "signed manifest is malformed" in reason and "not valid YAML" in reason
    assert "line 4" in reason


def test_a_rejection_reports_the_version_the_manifest_claims(
    panel: AuditorPanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.yaml").write_bytes(GOOD)
    panel.write_signatures(tmp_path / "sigs", GOOD, by=[0])  # 1 of the required 2
    code, data = run_cli(capsys, *verify(tmp_path, "--json"))
    assert code == 1
    assert (data["valid"], data["version"], data["expires"]) == (
        False,
        7,
        "2030-01-01T00:00:00Z",
    )
    assert data["checks"] == ["threshold"]
    assert main(verify(tmp_path)) == 1
    assert capsys.readouterr().out.startswith("manifest REJECTED (v7, unverified):\n")


def test_signatures_given_as_a_file_says_so(
    panel: AuditorPanel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.yaml").write_bytes(GOOD)
    (tmp_path / "sigs").write_bytes(b"")
    assert main(verify(tmp_path)) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'sigs'}: is not a directory; "
        "give the directory that holds the *.sig files\n"
    )


def test_a_trust_file_field_error_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "team-trust.yaml"
    bad.write_text("threshold: x\nauditors: []\n")
    assert main(["trust", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: threshold: expected an integer")
    assert f"(in {bad})" in err


def test_measure_of_a_missing_target_says_it_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["measure", str(tmp_path / "nosuch.bin")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nosuch.bin'}: does not exist; "
        "give an image directory or a service source directory\n"
    )
    (tmp_path / "file.bin").write_bytes(b"x")
    assert main(["measure", str(tmp_path / "file.bin")]) == 2
    assert "is a file; give an image directory" in capsys.readouterr().err


def test_manifest_add_of_an_entry_already_there_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.yaml"
    assert (
        main(["manifest", "new", "--version", "1", "--valid-days", "3", "--out", str(manifest)])
        == 0
    )
    capsys.readouterr()
    add = [
        "manifest", "add", str(manifest), "--service", "storage", "--mr-enclave", "ab" * 32,
        "--mr-signer", "cd" * 32, "--isv-prod-id", "4", "--min-isv-svn", "1", "--json",
    ]  # fmt: skip
    code, data = run_cli(capsys, *add)
    assert (code, data["changed"]) == (0, True)
    before = manifest.stat()
    code, data = run_cli(capsys, *add)
    assert (code, data["changed"]) == (0, False)
    assert manifest.stat().st_ino == before.st_ino  # not even rewritten
    assert main(add[:-1]) == 0
    out = capsys.readouterr().out
    assert "it already did: the file is unchanged and its signatures still apply" in out
    assert "the bytes changed" not in out


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            ["--expires", "2020-01-01T00:00:00Z"],
            "--expires: 2020-01-01T00:00:00Z is not in the future",
        ),
        (["--valid-days", "0"], "--valid-days: must be at least 1, got 0"),
    ],
)
def test_manifest_new_refuses_a_manifest_that_is_already_expired(
    when: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.yaml"
    assert main(["manifest", "new", "--version", "1", *when, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not out.exists()


# -- build refuses services that cannot serve ------------------------------------------------


@pytest.fixture(scope="module")
def author(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("author") / "author.key.pem"
    write_author_key(generate_author_key(), path)
    return path


def _storage(tmp_path: Path) -> Path:
    return Path(
        shutil.copytree(
            SERVICES / "storage", tmp_path / "storage", ignore=shutil.ignore_patterns("__pycache__")
        )
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda s: _edit(s / "service.yaml", "storage_service:build", "store:build"),
            "entrypoint: store:build: there is no store.py in the service",
        ),
        (
            lambda s: _edit(s / "service.yaml", "storage_service:build", "storage_service:make"),
            "entrypoint: storage_service:make: storage_service.py defines no top-level 'make'",
        ),
        (
            lambda s: _edit(s / "storage_service.py", "def build(", "def build(("),
            "storage_service.py, line ",
        ),
        (
            lambda s: (s / "helper.py").write_text("x = 1\n  y = 2\n"),
            "helper.py, line 2: does not compile: unexpected indent",
        ),
    ],
    ids=["no module", "no function", "syntax error in the entrypoint", "syntax error elsewhere"],
)
def test_build_refuses_code_that_could_never_serve(
    breakage: object,
    message: str,
    author: Path,
    panel: AuditorPanel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = _storage(tmp_path)
    breakage(source)  # type: ignore[operator]
    out = tmp_path / "image"
    argv = ["build", str(source), "--trust", str(tmp_path / "trust.yaml"),
            "--signing-key", str(author), "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}")
    assert not out.exists()
