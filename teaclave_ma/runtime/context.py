"""What a service's entrypoint receives: its name, its state directory and its peers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.trust import TrustedAuditor
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.secrets.client import KMS_SERVICE, fetch_secret
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.trust.manifest_trust import VerifiedManifest
from teaclave_ma.trust.sealed_state import StateSealer


@attrs.frozen
class ServiceContext:
    """What ``build(context)`` receives: the service's ``name``, its ``state_dir``, the
    unmeasured ``settings`` of runtime.yaml, and attested clients of its outbound peers."""

    name: str
    state_dir: Path
    peers: Mapping[str, PeerClient]
    settings: Mapping[str, str] = attrs.field(factory=dict)  # unmeasured, per deployment
    config_dir: Path = Path()  # relative settings paths are relative to this
    manifest: Callable[[], VerifiedManifest] | None = None  # the manifest in force now
    # For services that keep sealed data of their own (the kms's secrets).
    sealer: StateSealer | None = None
    initialize_state: bool = False  # this is the service's first start
    owners: tuple[TrustedAuditor, ...] = ()  # the measured secret owners (trust file)

    def state_sealer(self) -> StateSealer:
        if self.sealer is None:
            raise ConfigError("state", f"{self.name} runs without a sealing key")
        return self.sealer

    def secret(self, name: str) -> SecretValue:
        """Fetch a secret from the attested key-provisioning service (``kms`` in outbound)."""
        return fetch_secret(self.client(KMS_SERVICE), name)

    def current_manifest(self) -> VerifiedManifest:
        if self.manifest is None:
            raise ConfigError("manifest", f"{self.name} runs without a manifest source")
        return self.manifest()

    def setting_path(self, key: str) -> Path:
        try:
            return self.config_dir / self.settings[key]
        except KeyError:
            raise ConfigError(
                f"settings.{key}", f"{self.name} needs this setting in runtime.yaml"
            ) from None

    def client(self, service: str) -> PeerClient:
        """The attested client for an outbound peer named in service.yaml."""
        try:
            return self.peers[service]
        except KeyError:
            allowed = ", ".join(sorted(self.peers)) or "none"
            raise ConfigError(
                "outbound", f"{self.name} may not call {service!r} (outbound: {allowed})"
            ) from None
