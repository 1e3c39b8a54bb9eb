from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
ALL_SERVICES = ("client", "frontend", "authentication", "storage", "kms", "report")
RUNTIME_IDS = itertools.count()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    """The example services built, reviewed, and accepted by a manifest signed 2 of 3."""
    deployment = SimulatedDeployment.create(tmp_path_factory.mktemp("deployment"), SERVICES_DIR)
    deployment.add_secret("token-key", ["authentication"])
    deployment.add_secret("api-token", ["report"])
    sealed = deployment.seal("report", ["config.yaml"])
    for name in ALL_SERVICES:
        deployment.build(name, source=sealed if name == "report" else None)
    entries = {name: deployment.review(name) for name in ALL_SERVICES}
    deployment.publish_manifest(entries, version=1, signers=["alice", "bob"])
    return deployment


RuntimeFactory = Callable[..., ServiceRuntime]


@pytest.fixture
def runtimes(deployment: SimulatedDeployment) -> Iterator[RuntimeFactory]:
    """Make in-process service runtimes (call ``.start()`` to serve); all stopped afterwards."""
    made: list[ServiceRuntime] = []

    def make(
        image: EnclaveImage | str,
        *,
        limits: ServerLimits | None = None,
        manifest: Path | None = None,
        signatures: Path | None = None,
        settings: dict[str, str] | None = None,
        **peers: tuple[str, int],
    ) -> ServiceRuntime:
        if isinstance(image, str):
            image = deployment.images[image]
        # A state directory per runtime: accepted manifest versions must not leak across tests.
        config_path = deployment.runtime_config(
            f"{image.service.name}-{next(RUNTIME_IDS)}", peers=peers, settings=settings
        )
        config = parse_runtime_config(config_path.read_bytes(), config_path.parent)
        runtime = ServiceRuntime(
            image,
            config,
            manifest or deployment.manifest_path,
            signatures or deployment.signatures_dir,
            limits=limits,
            initialize_state=True,  # a new state directory each time
        )
        made.append(runtime)
        if image is deployment.images["kms"]:
            # The kms starts empty; its owner puts the secrets in once it listens.
            serve = runtime.start

            def serve_and_provision() -> tuple[str, int]:
                address = serve()
                # The owner verifies the kms under the manifest the kms runs.
                deployment.provision_kms(address, manifest=manifest, signatures=signatures)
                return address

            runtime.start = serve_and_provision  # type: ignore[method-assign]
        return runtime

    yield make
    for runtime in made:
        runtime.stop()
