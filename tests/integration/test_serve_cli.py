"""``teaclave-ma serve`` refuses to start unless every start-up check passes."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from teaclave_ma.attestation.attester import SimulatedAttester
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.credentials import RotatingCredentials
from teaclave_ma.trust.manifest_trust import AcceptedVersion


def serve(deployment: SimulatedDeployment, image: Path, config: Path) -> int:
    return main([
        "serve", str(image), "--manifest", str(deployment.manifest_path),
        "--signatures", str(deployment.signatures_dir), "--config", str(config),
        "--initialize-state",
    ])  # fmt: skip


def test_serve_refuses_a_tampered_image(
    deployment: SimulatedDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "storage-image"
    shutil.copytree(deployment.images["storage"].root, image)
    code_file = image / "content" / "storage_service.py"
    code_file.write_text(code_file.read_text() + "\nLEAK = True\n")
    assert serve(deployment, image, deployment.runtime_config("storage-tampered")) == 1
    assert "no longer matches its signed measurement" in capsys.readouterr().err


def test_serve_refuses_a_trust_setting_in_runtime_yaml(
    deployment: SimulatedDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    config = deployment.runtime_config("storage-old-opt-in")
    config.write_text(config.read_text() + "allow_tcb_status: [OutOfDate]\n")
    assert serve(deployment, deployment.images["storage"].root, config) == 2
    assert "allow_tcb_status: decides whom this service trusts" in capsys.readouterr().err


def test_quotes_need_64_bytes_of_report_data() -> None:
    platform = SimulatedPlatform.create()
    with pytest.raises(InputError, match="must be 64 bytes, got 32"):
        platform.quote(SgxIdentity(bytes(32), bytes(32), 0, 0, False), bytes(32))


def test_rotation_window_must_fit_in_the_lifetime() -> None:
    attester = SimulatedAttester(
        SimulatedPlatform.create(), SgxIdentity(bytes(32), bytes(32), 0, 0, False)
    )
    with pytest.raises(ConfigError, match="shorter than the lifetime"):
        RotatingCredentials(
            attester,
            "x",
            manifest=lambda: AcceptedVersion(1, bytes(32).hex()),
            lifetime=dt.timedelta(minutes=5),
            refresh_before=dt.timedelta(minutes=5),
        )
