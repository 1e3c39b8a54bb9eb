"""A user provisions a service directly: the owner attests it against the signed manifest
and sends it a secret, which it receives in the handler it declares; the host's replays and
keys of its own get nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from teaclave_ma.caller import outside_verifier
from teaclave_ma.cli.main import main
from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.secrets.direct import provision_secret
from teaclave_ma.secrets.owner import OwnerPeer, OwnerRequest, value_digest
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.testing.auditors import accepted
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer
from tests.integration.conftest import RuntimeFactory

VAULT_YAML = """name: vault
entrypoint: vault_service:build
enclave: {isv_prod_id: 9, isv_svn: 1}
inbound: [owners]
"""
VAULT_PY = """
from teaclave_ma.secrets.direct import accept_provisioning


def build(context):
    from teaclave_ma.rpc.service import Service

    service = Service(context.name)
    received = {}
    accept_provisioning(service, context.owners, lambda name, value: received.update({name: value}))

    @service.handler()
    def received_names(peer):
        return sorted(received)

    return service
"""
VALUE = SecretValue(b"sent by a person, straight to the enclave")


@pytest.fixture(scope="module")
def vault(deployment: SimulatedDeployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of its own accepting the vault, and its directory."""
    source = tmp_path_factory.mktemp("vault-src")
    (source / "service.yaml").write_text(VAULT_YAML)
    (source / "vault_service.py").write_text(VAULT_PY)
    deployment.build("vault", source=source)
    root = tmp_path_factory.mktemp("vault-manifest")
    data = deployment.panel.manifest({"vault": [accepted(deployment.images["vault"].identity)]})
    (root / "manifest.yaml").write_bytes(data)
    deployment.panel.write_signatures(root / "signatures", data, by=["alice", "bob"])
    return root


def verifier(deployment: SimulatedDeployment, root: Path) -> PeerVerifier:
    return outside_verifier(
        manifest=root / "manifest.yaml",
        signatures=root / "signatures",
        trust=deployment.trust_path,
        simulated_platform=deployment.platform_dir,
    )


def test_an_owner_provisions_a_service_through_the_cli(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, vault: Path, tmp_path: Path
) -> None:
    runtime = runtimes("vault", manifest=vault / "manifest.yaml", signatures=vault / "signatures")
    host, port = runtime.start()
    key, value = tmp_path / "owner.key.pem", tmp_path / "value"
    key.write_bytes(deployment.owner_key.to_pem())
    value.write_bytes(VALUE.reveal())
    code = main(
        [
            "secrets", "provision", f"vault@{host}:{port}", "api-key", "--from-file", str(value),
            "--owner-key", str(key), "--manifest", str(vault / "manifest.yaml"),
            "--signatures", str(vault / "signatures"), "--trust", str(deployment.trust_path),
            "--simulated-platform", str(deployment.platform_dir),
        ]
    )  # fmt: skip
    assert code == 0
    assert runtime.service.dispatch(_owner(deployment), "received_names", {}) == ["api-key"]


def _owner(deployment: SimulatedDeployment) -> OwnerPeer:
    return OwnerPeer("owner", deployment.owner_key.public_key.key_id)


def test_the_owner_sends_nothing_to_a_service_the_manifest_does_not_accept_as_it(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, vault: Path
) -> None:
    kms = runtimes("kms").start()  # an attested enclave, but the manifest's kms
    with pytest.raises(PeerRejected, match="not accepted for service 'vault'"):
        provision_secret(
            kms, "vault", deployment.owner_key, verifier(deployment, vault), name="x", value=VALUE
        )


def test_a_non_owner_and_a_replayed_nonce_are_refused(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory, vault: Path
) -> None:
    runtime = runtimes("vault", manifest=vault / "manifest.yaml", signatures=vault / "signatures")
    address = runtime.start()
    with pytest.raises(RefusedByPeer):
        provision_secret(
            address,
            "vault",
            AuditorSigningKey.generate(),
            verifier(deployment, vault),
            name="x",
            value=VALUE,
        )
    owner = _owner(deployment)
    with pytest.raises(Exception, match="nonce was not issued here"):
        runtime.service.dispatch(
            owner,
            "provision_secret",
            {"name": "x", "value": "eA==", "nonce": "00" * 16, "signature": "00" * 64},
        )
    nonce = runtime.service.dispatch(owner, "provision_nonce", {})
    with pytest.raises(Exception, match="not signed by owner"):
        runtime.service.dispatch(
            owner,
            "provision_secret",
            {"name": "x", "value": "eA==", "nonce": nonce, "signature": "00" * 64},
        )
    assert runtime.service.dispatch(owner, "received_names", {}) == []
    nonce = runtime.service.dispatch(owner, "provision_nonce", {})
    request = OwnerRequest("provision", "x", 0, value_digest(b"x"), f"vault:{nonce}")
    captured = {
        "name": "x",
        "value": "eA==",
        "nonce": nonce,
        "signature": request.sign(deployment.owner_key).hex(),
    }
    runtime.service.dispatch(owner, "provision_secret", captured)
    with pytest.raises(Exception, match="or is already used"):
        runtime.service.dispatch(owner, "provision_secret", captured)  # the host's replay
