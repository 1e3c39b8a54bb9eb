"""What service.yaml measures reaches the running service: its TCB policy judges peers, its
state section decides how the state is sealed. Each is a variant of an example service with
one line added to its service.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from teaclave_ma.attestation.errors import PolicyRejected
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.tls import PeerRejected
from teaclave_ma.trust.sealed_state import StateNotOurs, StateTampered
from tests.integration.conftest import RuntimeFactory


def variant(deployment: SimulatedDeployment, service: str, tag: str, line: str) -> str:
    def add_line(source: Path) -> None:
        with (source / "service.yaml").open("a") as service_yaml:
            service_yaml.write(line + "\n")

    deployment.build(service, source=deployment.variant_source(service, tag, add_line), tag=tag)
    return service + tag


def test_a_measured_minimum_tcb_evaluation_refuses_older_collateral(
    deployment: SimulatedDeployment, runtimes: RuntimeFactory
) -> None:
    """The simulated collateral is of TCB evaluation 1; a frontend measured to want 2 refuses
    storage's quote, naming the check, before sending a request."""
    strict = variant(deployment, "frontend", "-eval2", "tcb: {min_evaluation_data_number: 2}")
    storage = runtimes("storage")
    address = storage.start()
    frontend = runtimes(strict, storage=address, authentication=address)
    with pytest.raises(PeerRejected) as caught:
        frontend.context.client("storage").call("keys")
    reason = caught.value.reason
    assert isinstance(reason, PolicyRejected)
    assert reason.check == "tcb_evaluation_data_number"
    assert "older than the policy's minimum 2" in str(reason)
    # the same quote passes the example frontend, whose policy has no minimum
    plain = runtimes("frontend", storage=address, authentication=address)
    assert plain.context.client("storage").call("keys") == []


def node(deployment: SimulatedDeployment, image: str, state: Path, *, first: bool) -> EnclaveNode:
    config = deployment.runtime_config(image)
    text = config.read_text().replace("state_dir: state", f"state_dir: {state}")
    config.write_text(text)
    return EnclaveNode(
        deployment.images[image],
        parse_runtime_config(config.read_bytes(), config.parent),
        deployment.manifest_path,
        deployment.signatures_dir,
        initialize_state=first,
    )


def test_a_state_sealed_to_mrenclave_is_not_read_by_another_build(
    deployment: SimulatedDeployment, tmp_path: Path
) -> None:
    """Under ``state: {seal_to: mrenclave}`` a rebuild by the same author (same MRSIGNER,
    product and SVN) cannot read the state; under the default MRSIGNER policy it can."""
    exact = variant(deployment, "storage", "-exact", "state: {seal_to: mrenclave}")
    rebuilt = variant(deployment, "storage", "-exact2", "state: {seal_to: mrenclave}  # rebuilt")
    node(deployment, exact, tmp_path / "s1", first=True).close()
    node(deployment, exact, tmp_path / "s1", first=False).close()  # its own build reads it
    with pytest.raises((StateNotOurs, StateTampered)):
        node(deployment, rebuilt, tmp_path / "s1", first=False)
    author = variant(deployment, "storage", "-author", "# rebuilt, default policy")
    node(deployment, "storage", tmp_path / "s2", first=True).close()
    node(deployment, author, tmp_path / "s2", first=False).close()
