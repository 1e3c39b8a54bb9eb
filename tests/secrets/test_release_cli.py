"""``teaclave-ma manifest release``: the manifest's signed secrets: rules, written by the CLI
through the manifest's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from teaclave_ma.cli.main import main
from teaclave_ma.formats.manifest import SecretRelease, parse_manifest
from tests.helpers import run_cli


@pytest.fixture
def manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "manifest.yaml"
    argv = ["manifest", "new", "--version", "1", "--valid-days", "30", "--out", str(path)]
    assert main(argv) == 0
    capsys.readouterr()
    return path


def release(
    capsys: pytest.CaptureFixture[str], manifest: Path, *argv: str
) -> tuple[int, dict[str, object]]:
    return run_cli(capsys, "manifest", "release", str(manifest), "token-key", *argv, "--json")


def test_a_release_rule_is_written_and_read_back(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = release(
        capsys, manifest, "--allow", "authentication", "--allow", "report",
        "--min-config-svn", "2", "--relax", "verify_isv_svn=pinned by MRENCLAVE instead",
    )  # fmt: skip
    assert code == 0 and out["changed"] is True
    assert parse_manifest(manifest.read_bytes()).secrets == {
        "token-key": SecretRelease(
            ("authentication", "report"), 2, {"verify_isv_svn": "pinned by MRENCLAVE instead"}
        )
    }
    before = manifest.read_bytes()
    code, out = release(
        capsys, manifest, "--allow", "authentication", "--allow", "report",
        "--min-config-svn", "2", "--relax", "verify_isv_svn=pinned by MRENCLAVE instead",
    )  # fmt: skip
    assert code == 0 and out["changed"] is False and manifest.read_bytes() == before
    code, out = release(capsys, manifest, "--allow", "authentication")
    assert code == 0 and out["rule"] == {"allow": ["authentication"]}
    assert parse_manifest(manifest.read_bytes()).secrets["token-key"].allow == ("authentication",)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["--allow", "authentication", "--relax", "verify_everything=x"],
            "secrets.token-key.relax.verify_everything: unknown check",
        ),
        (["--allow", "authentication", "--relax", "verify_isv_svn= "], "needs a reason"),
        (
            ["--allow", "authentication", "--relax", "verify_isv_svn"],
            "--relax: expected CHECK=REASON",
        ),
        (["--allow", "owners"], "'owners' is reserved"),
        (["--allow", "Auth!"], "secrets.token-key.allow[0]"),
        (["--allow", "a", "--allow", "a"], "listed twice"),
        (["--allow", "a", "--min-config-svn", "70000"], "secrets.token-key.min_config_svn"),
    ],
    ids=["unknown-check", "no-reason", "no-equals", "reserved", "bad-name", "twice", "svn-range"],
)
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_written(
    manifest: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    before = manifest.read_bytes()
    code = main(["manifest", "release", str(manifest), "token-key", *argv])
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert manifest.read_bytes() == before


def test_a_bad_secret_name_is_refused(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["manifest", "release", str(manifest), "Token Key", "--allow", "a"])
    assert code == 2
    assert "secrets.Token Key: invalid secret name" in capsys.readouterr().err
