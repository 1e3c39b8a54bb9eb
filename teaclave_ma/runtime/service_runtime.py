"""Start-up of one service, in the order that keeps it safe.

1. Load the enclave image and check its integrity against its signed measurement.
2. Read the trust file embedded in the image (never one from outside it).
3. Verify the runtime manifest with it; refuse to start without a valid one.
4. Obtain our RA-TLS credentials from the attestation backend.
5. Build the service from its entrypoint, with attested clients for its outbound peers.
6. Serve, and re-verify the manifest on SIGHUP or when its files change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from teaclave_ma.attestation.attester import SealingPolicy
from teaclave_ma.enclave.image import EnclaveImage
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.formats.runtime_config import RuntimeConfig
from teaclave_ma.formats.service_config import OWNERS_EDGE, ServiceConfig
from teaclave_ma.formats.trust import parse_trust_file
from teaclave_ma.identity import PeerMeasurement
from teaclave_ma.observability.events import NO_OBSERVER, Observer
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.outside import Caller, OpenEdge, UnattestedPeer
from teaclave_ma.rpc.server import MutualTlsServer, RpcServer
from teaclave_ma.rpc.service import Service
from teaclave_ma.rpc.wsgi import WsgiResponder
from teaclave_ma.runtime.attestation_setup import setup_attestation
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.runtime.image_import import ImageImporter
from teaclave_ma.secrets.owner import OwnerAdmission
from teaclave_ma.transport.credentials import RotatingCredentials, utc_now
from teaclave_ma.transport.evidence import bound_quote, extract_evidence
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerAuthenticator
from teaclave_ma.trust.keeper import ManifestKeeper, StateFile
from teaclave_ma.trust.manifest_trust import ManifestTrust
from teaclave_ma.trust.sealed_state import StateSealer

log = logging.getLogger(__name__)

SEALED_STATE = "service-state.sealed"


class EnclaveNode:
    """Steps 1-4: an enclave that has verified its manifest and can attest itself and its
    peers; ``teaclave-ma run`` stops here, ``ServiceRuntime`` goes on to serve."""

    def __init__(
        self,
        image: EnclaveImage,
        runtime: RuntimeConfig,
        manifest_path: Path,
        signatures_dir: Path,
        *,
        initialize_state: bool = False,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        """``initialize_state``: this is the service's first start (``--initialize-state``).
        How the state is sealed comes from the measured service.yaml (``state:``)."""
        self.image = image
        self.runtime = runtime
        self.observer = observer
        trust = parse_trust_file(image.trust_bytes, "embedded trust file")
        # First, since the sealed state needs the backend's sealing key.
        self.attestation = setup_attestation(image, runtime.attestation)
        runtime.state_dir.mkdir(parents=True, exist_ok=True)
        sealer = StateSealer(
            self.attestation.attester,
            image.service.name,
            image.identity.isv_svn,
            policy=SealingPolicy(image.service.state.seal_to),
            unsealed_ok=image.service.state.unsealed_ok,
        )
        state = StateFile.open(
            runtime.state_dir / SEALED_STATE, sealer, initialize=initialize_state
        )
        self.keeper = ManifestKeeper(ManifestTrust(trust), manifest_path, signatures_dir, state)
        self.manifest = self.keeper.load()  # raises: no service without a verified manifest
        observer.manifest_in_force(self.manifest.version, self.manifest.manifest.expires)
        self.credentials = RotatingCredentials(
            self.attestation.attester, image.service.name, manifest=self.keeper.in_force
        )
        self.verifier = PeerVerifier(
            self.keeper,
            self.attestation.anchor,
            self.attestation.collateral_for,
            image.service.tcb.policy(),
            clock=self.keeper.clock or utc_now,
            observer=observer,
        )
        self.context = ServiceContext(
            name=image.service.name,
            state_dir=runtime.state_dir,
            peers={name: self._client(name) for name in image.service.outbound},
            settings=runtime.settings,
            config_dir=runtime.config_dir,
            manifest=self.keeper.current,
            sealer=sealer,
            initialize_state=initialize_state,
            owners=trust.owners,
        )
        # Owners are admitted only where the measured inbound list names them.
        self.inbound_verifier: PeerAuthenticator[Any] = (
            OwnerAdmission(self.verifier, trust.owners)
            if OWNERS_EDGE in image.service.inbound
            else self.verifier
        )

    def _client(self, service: str) -> PeerClient:
        address = self.runtime.peers.get(service)
        if address is None:
            raise ConfigError(f"peers.{service}", f"no address for outbound peer {service!r}")
        return PeerClient(service, address, self.credentials, self.verifier)

    def self_identity(self) -> PeerMeasurement:
        """Who this enclave is as its own quote says: on hardware the measurement comes from
        the quote, not from the image (whose measurement is the simulation's)."""
        certificate = self.credentials.current().certificate.public_bytes(
            serialization.Encoding.DER
        )
        return bound_quote(extract_evidence(certificate)).body.identity()

    def close(self) -> None:
        for client in self.context.peers.values():
            client.close()


class ServiceRuntime(EnclaveNode):
    """Steps 5-6: build the service from its entrypoint and serve it."""

    def __init__(
        self,
        image: EnclaveImage,
        runtime: RuntimeConfig,
        manifest_path: Path,
        signatures_dir: Path,
        *,
        limits: ServerLimits | None = None,
        initialize_state: bool = False,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        super().__init__(
            image,
            runtime,
            manifest_path,
            signatures_dir,
            initialize_state=initialize_state,
            observer=observer,
        )
        self._importer = ImageImporter.install(image.service.name, image.content, image.code_dir)
        try:
            self.service = answering(
                image.service, load_entrypoint(image, self._importer)(self.context)
            )
        except BaseException:
            self._importer.uninstall()
            raise
        # The image's measured limits; an embedding program (a test) may pass its own.
        self._limits = limits or image.service.limits
        self.server: RpcServer | MutualTlsServer[Caller] | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        # Called after each manifest the keeper accepts on a reload (the worker pool's).
        self.on_reload: list[Callable[[], None]] = []

    def start(
        self, *, address: tuple[str, int] | None = None, reuse_port: bool = False
    ) -> tuple[str, int]:
        """Listen (on ``address``, runtime.yaml's ``listen`` unless given) and serve, and
        watch the manifest files; until then the runtime can still act as a client of its
        peers."""
        address = self.serve(address or self.runtime.listen, reuse_port=reuse_port)
        self.watch()
        return address

    def serve(self, address: tuple[str, int], *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen and serve without watching the files (a worker: its parent watches)."""
        service = self.image.service
        if service.unattested_callers:  # measured: `{callers: any}` in inbound
            self.server = MutualTlsServer[Caller](
                self.service,
                self.credentials,
                OpenEdge(self.verifier),
                inbound=service.inbound,
                address=address,
                limits=self._limits,
                unattested=UnattestedPeer,
                observer=self.observer,
                reuse_port=reuse_port,
            )
        else:
            self.server = RpcServer(
                self.service,
                self.credentials,
                self.inbound_verifier,
                inbound=service.inbound,
                address=address,
                limits=self._limits,
                observer=self.observer,
                reuse_port=reuse_port,
            )
        return self.server.start()

    def served_by(self, processes: int) -> None:
        """How many processes serve this application (the worker pool's), which a web
        application learns from PEP 3333's ``wsgi.multiprocess``."""
        if isinstance(self.service, WsgiResponder):
            self.service.multiprocess = processes > 1

    def watch(self) -> None:
        """Re-verify the manifest whenever its files change (and notice its expiry)."""
        self._watcher = threading.Thread(target=self._watch_manifest, daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()
        self.close()
        self._importer.uninstall()

    def reload_manifest(self) -> bool:
        if not self.keeper.reload():
            return False
        manifest = self.keeper.current()
        self.observer.manifest_in_force(manifest.version, manifest.manifest.expires)
        for listener in self.on_reload:
            listener()
        return True

    def _watch_manifest(self, interval: float = 2.0) -> None:
        # Polling the files' fingerprints needs no platform-specific watcher and also
        # notices a manifest that expires while nothing changes on disk.
        last = self.keeper.fingerprint()
        reported: str | None = None
        while not self._stop.wait(interval):
            current = self.keeper.fingerprint()
            if current != last:
                last = current
                try:
                    self.reload_manifest()
                except Exception:  # a bug, not a bad file: keep watching, the old one holds
                    log.exception("reloading the manifest failed; the one in force stays")
            try:
                self.keeper.current()
                reported = None
            except Exception as exc:  # every handshake refuses until fixed
                # Once per change of state, so an expired manifest does not flood the log.
                if str(exc) != reported:
                    reported = str(exc)
                    log.error("%s", exc)


def answering(config: ServiceConfig, built: object) -> Service | WsgiResponder:
    """What serves the requests: the ``Service`` or web application the entrypoint built,
    as the measured ``app:`` of service.yaml declares it; a ``ConfigError`` naming both when
    the entrypoint returned something else (the server never guesses)."""
    if config.app == "rpc":
        if not isinstance(built, Service):
            raise ConfigError(
                "app",
                f"{config.name}'s entrypoint returned {type(built).__name__}, not a Service; "
                f"service.yaml says app: rpc (the default); a web application needs app: wsgi "
                f"or app: asgi",
            )
        return built
    if isinstance(built, Service):
        raise ConfigError(
            "app",
            f"{config.name}'s entrypoint returned a JSON-RPC Service; service.yaml says "
            f"app: {config.app} (remove it to serve JSON-RPC)",
        )
    # Background work may last as long as an idle connection is kept, no longer.
    return WsgiResponder.for_app(
        config.app, built, config.name, background_seconds=config.limits.idle_timeout
    )


def load_entrypoint(
    image: EnclaveImage, importer: ImageImporter | None = None
) -> Callable[[ServiceContext], object]:
    """``module:function`` of the image, its module imported from the image's verified bytes.

    Every module of the service (the entrypoint's siblings and subpackages, imported
    relatively) is compiled from the bytes ``load_image`` measured, so a file swapped on disk
    after verification never runs (``image_import``). ``importer``: the one to load through
    (its owner uninstalls it); a new one otherwise."""
    if image.service.entrypoint is None:
        raise ConfigError(
            "entrypoint",
            f"{image.service.name} has no entrypoint to serve (run it with `teaclave-ma run`)",
        )
    module_name, function_name = image.service.entrypoint.split(":")
    if f"{module_name}.py" not in image.content:
        raise ConfigError("entrypoint", f"{module_name}.py is not in the image")
    if importer is None:
        importer = ImageImporter.install(image.service.name, image.content, image.code_dir)
    module = importer.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError("entrypoint", f"{module_name}.py has no function {function_name!r}")
    return function  # type: ignore[no-any-return]
