"""The owners' channel to the kms, played by the host: values reach the kms only from a
measured owner, over TLS on which the kms was attested, and the kms's files hold none."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from teaclave_ma.caller import outside_verifier
from teaclave_ma.cli.main import main
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.secrets.client import KmsOwnerClient, fetch_secret
from teaclave_ma.secrets.owner import OwnerRefused
from teaclave_ma.secrets.policy import SecretRefused, SecretValue
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import RefusedByPeer
from tests.integration.conftest import RuntimeFactory


def owner_args(deployment: SimulatedDeployment, kms: tuple[str, int], key: Path) -> list[str]:
    return [
        "--kms", f"{kms[0]}:{kms[1]}", "--owner-key", str(key),
        "--manifest", str(deployment.manifest_path), "--signatures", str(deployment.signatures_dir),
        "--trust", str(deployment.trust_path), "--simulated-platform", str(deployment.platform_dir),
    ]  # fmt: skip


@pytest.fixture
def owner_key(deployment: SimulatedDeployment, tmp_path: Path) -> Path:
    path = tmp_path / "owner.key.pem"
    path.write_bytes(deployment.owner_key.to_pem())
    return path


def test_an_owner_puts_rotates_lists_and_deletes_and_the_kms_files_hold_no_value(
    deployment: SimulatedDeployment,
    runtimes: RuntimeFactory,
    owner_key: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kms = runtimes("kms")
    address = kms.start()
    value = tmp_path / "value"
    value.write_bytes(b"a value the host never reads")
    args = owner_args(deployment, address, owner_key)
    assert main(["secrets", "put", "extra", "--from-file", str(value), *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    value.write_bytes(b"a rotated value, also unread")
    assert main(["secrets", "rotate", "extra", "--from-file", str(value), *args]) == 0
    assert "rotated secret 'extra' (version 2)" in capsys.readouterr().out
    assert main(["secrets", "list", *args, "--json"]) == 0
    listing = capsys.readouterr().out
    assert json.loads(listing)["secrets"]["extra"] == 2
    assert "rotated" not in listing
    for path in deployment.root.rglob("*"):
        if path.is_file() and path.name != "value":
            data = path.read_bytes()
            assert b"a rotated value" not in data, path
            for secret in deployment.pending.values():
                assert secret.reveal() not in data, path
    assert main(["secrets", "delete", "extra", *args]) == 0
    capsys.readouterr()
    assert main(["secrets", "list", *args, "--json"]) == 0
    assert "extra" not in json.loads(capsys.readouterr().out)["secrets"]


def test_a_key_that_is_no_measured_owner_is_refused_by_the_kms(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, tmp_path: Path
) -> None:
    address = runtimes("kms").start()
    verifier = outside_verifier(
        manifest=deployment.manifest_path,
        signatures=deployment.signatures_dir,
        trust=deployment.trust_path,
        simulated_platform=deployment.platform_dir,
    )
    host = KmsOwnerClient(address, AuditorSigningKey.generate(), verifier)
    with host, pytest.raises(RefusedByPeer):
        host.listing()


def test_an_enclave_cannot_act_as_an_owner(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    address = runtimes("kms").start()
    authentication = runtimes("authentication", storage=address, kms=address)
    client = PeerClient("kms", address, authentication.credentials, authentication.verifier)
    with pytest.raises(Exception, match="only an owner may do this"):
        client.call("list_secrets")
    client.close()


def test_an_owner_cannot_fetch_a_value(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    address = runtimes("kms").start()
    with deployment.kms_owner(address) as owner:
        with pytest.raises(Exception, match="owners put secrets; they do not fetch them"):
            owner._call("get_secret", name="token-key")
        with pytest.raises(OwnerRefused, match="exists: rotate it instead"):
            owner.change("put", "token-key", deployment.pending["token-key"])


def test_a_rotated_secret_reaches_the_next_fetch_and_releases_are_logged_without_values(
    deployment: SimulatedDeployment,
    runtimes: RuntimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    address = runtimes("kms").start()
    authentication = runtimes("authentication", storage=address, kms=address)
    before = authentication.context.secret("token-key")
    assert before == deployment.pending["token-key"]
    rotated = SecretValue(b"the rotated token key, 32 bytes!")
    with deployment.kms_owner(address) as owner:
        assert owner.change("rotate", "token-key", rotated) == 2
    assert authentication.context.secret("token-key") == rotated
    frontend = runtimes("frontend", storage=address, authentication=address)
    with pytest.raises(SecretRefused, match="not released to service 'frontend'"):
        fetch_secret(
            PeerClient("kms", address, frontend.credentials, frontend.verifier), "token-key"
        )
    assert "released secret 'token-key' to authentication" in caplog.text
    assert "refused secret 'token-key' to frontend" in caplog.text
    assert "rotate of secret 'token-key', version 2, by owner owner" in caplog.text
    for value in (before, rotated):
        assert value.reveal().decode(errors="replace") not in caplog.text
