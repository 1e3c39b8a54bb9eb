"""What a newcomer installs: the wheel, in a fresh virtual environment, from PyPI.

Marked ``install`` (network, about two minutes): CI runs them with the suite; offline,
deselect them with ``-m "not install"``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.install

# Certificates (Gramine's too), mutual RA-TLS handshakes, manifest verification, PCCS.
SMOKE = [
    "tests/transport/test_evidence.py",
    "tests/integration/test_attested_rpc.py",
    "tests/trust/test_cli_flow.py",
    "tests/attestation/test_pccs.py",
]
# It pins down that cryptography 50 refuses Gramine's certificate (why the DER reader
# exists); cryptography 43, the floor, only warns. What the library does is tested alike.
NOT_AT_THE_FLOOR = (
    "tests/transport/test_evidence.py::"
    "test_gramine_certificate_is_read_despite_null_signature_parameters"
)


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# What a clean checkout does not hold: setuptools reuses build/ and *.egg-info/ of an earlier
# build, so a module deleted since could still ship in the wheel.
NOT_IN_A_CHECKOUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "demo-run"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "teaclave-ma"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_IN_A_CHECKOUT)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source)
    (built,) = out.glob("teaclave_ma-*.whl")
    return built


def fresh_venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", path)
    return path / "bin"


def floors() -> dict[str, Version]:
    """Every dependency (normalised name) with the lowest version pyproject.toml allows."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = {}
    for text in dependencies:
        requirement = Requirement(text)
        (version,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        lowest[canonicalize_name(requirement.name)] = Version(version)
    return lowest


def test_the_installed_wheel_runs_the_demo_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "-q", wheel)
    assert run(bin_dir / "teaclave-ma", "--version").stdout.startswith("teaclave-ma ")
    result = run(
        bin_dir / "teaclave-ma", "demo", "--json", "--workdir", tmp_path / "run", cwd=tmp_path
    )
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert all(outcome["held"] for outcome in report["outcomes"])


def test_the_wheel_ships_the_interop_certificates_byte_for_byte(wheel: Path) -> None:
    source = ROOT / "teaclave_ma" / "testing" / "data" / "interop"
    expected = {
        f"teaclave_ma/testing/data/interop/{p.name}": p.read_bytes() for p in source.iterdir()
    }
    assert {"LICENSE", "README.md", "gramine-cert.pem", "intel-sgxsdk-cert.pem",
            "rats-tls-cert.pem"} <= {Path(name).name for name in expected}  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in expected if name in archive.namelist()}
    assert shipped == expected


def test_the_lowest_allowed_dependency_versions_work(wheel: Path, tmp_path: Path) -> None:
    lowest = floors()
    assert len(lowest) == 10
    constraints = tmp_path / "floors.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in lowest.items()))
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "-q", "-c", constraints, wheel, "pytest", "hypothesis")
    frozen = dict(
        line.split("==", 1)
        for line in run(bin_dir / "pip", "freeze").stdout.splitlines()
        if "==" in line
    )
    installed = {canonicalize_name(name): Version(version) for name, version in frozen.items()}
    assert {name: installed[name] for name in lowest} == lowest
    run(
        bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE,
        "--deselect", NOT_AT_THE_FLOOR, cwd=ROOT,
    )  # fmt: skip
