"""Attack catalogue, the host's configuration: runtime.yaml and the simulated platform are
the host's, so neither may decide whom a service trusts.

Each test plays the host against the example deployment: it edits runtime.yaml, swaps the
simulated platform, or points a real image at a simulation, and asserts the specific
refusal. Where the image is involved, its measurement is checked to be unchanged: the host
changes nothing a peer or an auditor would see, so only the service's own checks can stop it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.enclave.attestation_profile import PROFILE_FILE
from teaclave_ma.enclave.errors import ImageError
from teaclave_ma.enclave.image import load_image
from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.runtime_config import (
    MEASURED_ELSEWHERE,
    UntrustedSetting,
    parse_runtime_config,
)
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.runtime.attestation_setup import TrustRootMismatch
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment
from tests.attacks.test_handshake_attacks import (  # noqa: F401 - fixtures
    Victim,
    enclave,
    frontend_identity,
    rejected_reason,
    requests_read,
    storage,
)
from tests.integration.conftest import deployment, runtimes  # noqa: F401

BASE = b"listen: 127.0.0.1:0\nstate_dir: state\n"


def node(deployment: SimulatedDeployment, image: str, config: Path) -> EnclaveNode:  # noqa: F811
    runtime = parse_runtime_config(config.read_bytes(), config.parent)
    return EnclaveNode(
        deployment.images[image], runtime, deployment.manifest_path, deployment.signatures_dir
    )


def host_platform(tmp_path: Path) -> Path:
    """A simulated platform the host made itself: its own root, its own keys."""
    directory = tmp_path / "host-platform"
    SimulatedPlatform.create().save(directory)
    return directory


def test_runtime_yaml_that_picks_a_simulated_root_is_refused(
    deployment: SimulatedDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    """The reviewer's attack: switch storage to a platform of the host's making with the old
    opt-in keys. Those keys no longer exist in runtime.yaml; each is refused by name."""
    measured = deployment.images["storage"].identity.mr_enclave
    config = tmp_path / "runtime.yaml"
    config.write_bytes(
        BASE + b"attestation: {backend: simulated, simulated_platform: "
        + str(host_platform(tmp_path)).encode()
        + b", trust_simulated_root: true}\n"
    )
    code = main([
        "serve", str(deployment.images["storage"].root), "--manifest", str(deployment.manifest_path),
        "--signatures", str(deployment.signatures_dir), "--config", str(config),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "attestation.backend: decides whom this service trusts" in err
    assert "service.yaml attestation.backends" in err
    assert load_image(deployment.images["storage"].root).identity.mr_enclave == measured


@pytest.mark.parametrize("setting", sorted(MEASURED_ELSEWHERE))
def test_every_trust_setting_in_runtime_yaml_is_refused_naming_where_it_belongs(
    setting: str, tmp_path: Path
) -> None:
    section, _, key = setting.rpartition(".")
    line = f"{key}: x" if not section else f"{section}: {{{key}: x}}"
    with pytest.raises(UntrustedSetting) as caught:
        parse_runtime_config(BASE + line.encode() + b"\n", tmp_path)
    assert caught.value.field == setting
    assert MEASURED_ELSEWHERE[setting] in str(caught.value)


def test_a_swapped_simulated_platform_is_refused_with_both_roots(
    deployment: SimulatedDeployment, tmp_path: Path  # noqa: F811
) -> None:
    """The image trusts the one platform it was built for, not another one the host made."""
    other = host_platform(tmp_path)
    config = tmp_path / "runtime.yaml"
    config.write_bytes(BASE + f"attestation: {{simulated_platform: {other}}}\n".encode())
    with pytest.raises(TrustRootMismatch) as caught:
        node(deployment, "storage", config)
    measured = deployment.images["storage"].profile.anchor.root_sha256.hex()
    assert f"trusts only {measured}" in str(caught.value)
    assert SimulatedPlatform.load(other).root_certificate_der.hex() not in str(caught.value)
    assert caught.value.check == "trusted_root"


def test_the_swap_through_the_cli_exits_1(
    deployment: SimulatedDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    config = tmp_path / "runtime.yaml"
    other = host_platform(tmp_path)
    config.write_bytes(BASE + f"attestation: {{simulated_platform: {other}}}\n".encode())
    code = main([
        "serve", str(deployment.images["storage"].root), "--manifest", str(deployment.manifest_path),
        "--signatures", str(deployment.signatures_dir), "--config", str(config),
    ])  # fmt: skip
    assert code == 1
    assert "refused: the simulated platform at" in capsys.readouterr().err


def test_a_forged_frontend_from_the_hosts_platform_is_refused_by_storage(
    storage: Victim, frontend_identity: SgxIdentity, requests_read: list[Any]  # noqa: F811
) -> None:
    """The host knows frontend's measurement, so a platform of its own can quote it; storage,
    measured to trust the deployment's platform only, refuses the quote's root."""
    forged = enclave(SimulatedPlatform.create(), frontend_identity, storage.in_force)
    reason = rejected_reason(storage.refusal_of(forged))
    assert isinstance(reason, QuoteVerificationError)
    assert "root" in str(reason)
    assert requests_read == []


def test_a_real_image_pointed_at_a_simulation_is_refused(
    deployment: SimulatedDeployment, tmp_path: Path  # noqa: F811
) -> None:
    deployment.build("storage", tag="-hardware", tee=None)
    config = tmp_path / "runtime.yaml"
    config.write_bytes(
        BASE + f"attestation: {{simulated_platform: {deployment.platform_dir}}}\n".encode()
    )
    with pytest.raises(ConfigError, match="built without --simulated-platform: it trusts Intel"):
        node(deployment, "storage-hardware", config)


def test_a_simulated_image_needs_its_platform_directory(
    deployment: SimulatedDeployment, tmp_path: Path  # noqa: F811
) -> None:
    config = tmp_path / "runtime.yaml"
    config.write_bytes(BASE + b"attestation: {collateral: {file: c.json}}\n")
    with pytest.raises(ConfigError, match="built for a simulated platform"):
        node(deployment, "storage", config)


def test_the_profile_is_measured_and_cannot_be_edited_in_an_image(
    deployment: SimulatedDeployment, tmp_path: Path  # noqa: F811
) -> None:
    """Turning a simulated image into an 'Intel' one (or back) by editing attestation.json
    changes MRENCLAVE, so the image no longer matches its signed measurement."""
    image = tmp_path / "storage"
    shutil.copytree(deployment.images["storage"].root, image)
    profile = image / "content" / PROFILE_FILE
    document = json.loads(profile.read_bytes())
    document["root"]["sha256"] = "00" * 32
    profile.write_text(json.dumps(document))
    with pytest.raises(ImageError, match="no longer matches its signed measurement") as caught:
        load_image(image)
    assert caught.value.check == "image_integrity"


def test_device_paths_are_measured_and_absolute() -> None:
    base = b"name: s\nenclave: {isv_prod_id: 1, isv_svn: 1}\n"
    config = parse_service_config(
        base + b"attestation: {backends: [gramine], gramine_device: /dev/attestation}\n"
    )
    assert config.attestation.backends == ("gramine",)
    with pytest.raises(InputError, match=r"attestation\.gramine_device: must be an absolute path"):
        parse_service_config(base + b"attestation: {gramine_device: dev/attestation}\n")
    with pytest.raises(InputError, match=r"attestation\.backends\[0\]"):
        parse_service_config(base + b"attestation: {backends: [simulated]}\n")
    with pytest.raises(InputError, match=r"moved: write it as tcb\.allow_status"):
        parse_service_config(base + b"allow_tcb_status: [UpToDate]\n")


def test_measure_and_review_say_which_root_an_image_trusts(
    deployment: SimulatedDeployment, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    image = deployment.images["storage"]
    assert main(["measure", str(image.root), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["simulated"] is True
    assert measured["trusted_root"]["sha256"] == image.profile.anchor.root_sha256.hex()
    source = deployment.sources["storage"]
    assert main([
        "auditor", "review", str(source), "--image", str(image.root),
        "--trust", str(deployment.trust_path), "--json",
    ]) == 0  # fmt: skip
    reviewed = json.loads(capsys.readouterr().out)
    assert reviewed["simulated"] is True
    assert reviewed["trusted_root"] == measured["trusted_root"]
    assert main([
        "auditor", "review", str(source), "--image", str(image.root),
        "--trust", str(deployment.trust_path),
    ]) == 0  # fmt: skip
    assert "SIMULATED" in capsys.readouterr().out
