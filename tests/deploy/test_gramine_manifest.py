"""``teaclave-ma gramine manifest``: the template parses as TOML and measures, allows and
seals what it must."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import cryptography
import pytest

import teaclave_ma
from teaclave_ma.cli.main import main
from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.testing.deployment import SimulatedDeployment
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    return SimulatedDeployment.create(tmp_path_factory.mktemp("gramine"), PROJECT_ROOT / "services")


@pytest.fixture(scope="module")
def kms(deployment: SimulatedDeployment) -> EnclaveImage:
    return deployment.build("kms", tee=None)


def render(
    capsys: pytest.CaptureFixture[str], image: Path, out: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    code = main(["gramine", "manifest", str(image), "--out", str(out), *extra])
    err = capsys.readouterr().err
    return code, tomllib.loads(out.read_text()) if code == 0 else {}, err


def test_the_template_runs_serve_on_the_image(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, toml, err = render(
        capsys, kms.root, tmp_path / "kms.manifest.template", "--image-path", "/app/images/kms"
    )
    assert code == 0, err
    assert toml["libos"]["entrypoint"] == str(Path(sys.executable).resolve())
    argv = toml["loader"]["argv"]
    assert argv[1:5] == ["-m", "teaclave_ma.cli.main", "serve", "/app/images/kms"]
    assert argv[5:] == [
        "--manifest", "/etc/teaclave/manifest/manifest.yaml",
        "--signatures", "/etc/teaclave/manifest",
        "--config", "/etc/teaclave/runtime/runtime.yaml",
    ]  # fmt: skip
    assert "insecure__use_cmdline_argv" not in toml["loader"]  # argv is measured, not the host's
    assert "insecure__use_host_env" not in toml["loader"]


def test_interpreter_library_and_image_are_measured_and_runtime_yaml_is_not(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, toml, err = render(capsys, kms.root, tmp_path / "t", "--image-path", "/app/images/kms")
    assert code == 0, err
    sgx = toml["sgx"]
    trusted = sgx["trusted_files"]
    assert f"file:{Path(sys.executable).resolve()}" in trusted
    library = Path(teaclave_ma.__file__).resolve().parent
    dirs = [Path(entry[5:]) for entry in trusted if entry.endswith("/")]
    assert "file:/app/images/kms/" in trusted
    # The library (in a checkout: the editable install's source) and its dependencies.
    assert any(library.is_relative_to(d) for d in dirs)
    assert any(Path(cryptography.__file__).resolve().is_relative_to(d) for d in dirs)
    # Gramine runs the interpreter itself, not a venv's link: the code is found by a
    # measured PYTHONPATH, each entry of it under a measured directory or the library's.
    python_path = toml["loader"]["env"]["PYTHONPATH"].split(":")
    assert str(Path(cryptography.__file__).resolve().parents[1]) in python_path
    assert str(library.parent) in python_path or any(
        library.is_relative_to(entry) for entry in python_path
    )
    assert sgx["allowed_files"] == [
        "file:/etc/teaclave/runtime/runtime.yaml",
        "file:/etc/teaclave/manifest/",
    ]
    assert not any(entry.startswith("file:/etc/teaclave") for entry in trusted)
    assert sgx["file_check_policy"] == "strict"


def test_state_is_an_encrypted_mount_under_the_sealing_key(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, toml, err = render(capsys, kms.root, tmp_path / "t")
    assert code == 0, err
    state = [mount for mount in toml["fs"]["mounts"] if mount["path"] == "/var/lib/teaclave/state"]
    assert state == [
        {
            "path": "/var/lib/teaclave/state",
            "uri": "file:/var/lib/teaclave/state",
            "type": "encrypted",
            "key_name": "_sgx_mrsigner",  # kms's service.yaml keeps the default seal_to
        }
    ]


def test_sgx_fields_come_from_the_images_enclave_json(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, toml, err = render(capsys, kms.root, tmp_path / "t")
    assert code == 0, err
    enclave = json.loads(kms.content["enclave.json"])
    sgx = toml["sgx"]
    assert sgx["remote_attestation"] == "dcap"
    assert (sgx["isvprodid"], sgx["isvsvn"], sgx["debug"]) == (
        enclave["sgx.isvprodid"],
        enclave["sgx.isvsvn"],
        enclave["sgx.debug"],
    )
    assert (sgx["isvprodid"], sgx["isvsvn"]) == (5, 1)


def test_a_debug_build_says_so(
    deployment: SimulatedDeployment,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def debug(source: Path) -> None:
        config = source / "service.yaml"
        config.write_text(config.read_text().replace("isv_svn: 1", "isv_svn: 1\n  debug: true"))

    image = deployment.build(
        "kms", source=deployment.variant_source("kms", "-debug", debug), tag="-debug", tee=None
    )
    code, toml, err = render(capsys, image.root, tmp_path / "t")
    assert code == 0, err
    assert toml["sgx"]["debug"] is True


def test_a_mrenclave_sealed_service_gets_the_mrenclave_key(
    deployment: SimulatedDeployment,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def seal_to_mrenclave(source: Path) -> None:
        with (source / "service.yaml").open("a") as config:
            config.write("state: {seal_to: mrenclave}\n")

    image = deployment.build(
        "kms",
        source=deployment.variant_source("kms", "-mre", seal_to_mrenclave),
        tag="-mre",
        tee=None,
    )
    code, toml, err = render(capsys, image.root, tmp_path / "t")
    assert code == 0, err
    keys = {mount.get("key_name") for mount in toml["fs"]["mounts"]}
    assert "_sgx_mrenclave" in keys and "_sgx_mrsigner" not in keys


def test_a_tampered_image_gets_no_template(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = Path(shutil.copytree(kms.root, tmp_path / "tampered"))
    (tampered / "content" / "kms_service.py").write_text("x = 1\n")
    code, _, err = render(capsys, tampered, tmp_path / "t")
    assert code == 1
    assert "no longer matches its signed measurement" in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--image-path", "images/kms"), ("--state-dir", "/var/../etc")]
)
def test_paths_must_be_absolute(
    kms: EnclaveImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
) -> None:
    code, _, err = render(capsys, kms.root, tmp_path / "t", flag, value)
    assert code == 2
    assert f"{flag}: expected an absolute path without '..', got {value!r}" in err


def test_an_existing_template_is_kept_without_force(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t"
    out.write_text("mine")
    code = main(["gramine", "manifest", str(kms.root), "--out", str(out)])
    assert code == 2
    assert out.read_text() == "mine"
    assert main(["gramine", "manifest", str(kms.root), "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    assert tomllib.loads(out.read_text())["sgx"]["remote_attestation"] == "dcap"


def test_the_first_start_build_initializes_the_state(
    kms: EnclaveImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, normal, _ = render(capsys, kms.root, tmp_path / "normal")
    assert code == 0
    code, first, err = render(capsys, kms.root, tmp_path / "first", "--initialize-state")
    assert code == 0, err
    assert first["loader"]["argv"] == [*normal["loader"]["argv"], "--initialize-state"]
    assert "--initialize-state" not in normal["loader"]["argv"]
