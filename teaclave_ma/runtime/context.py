"""What a service's entrypoint receives: its name, its state directory and its peers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from teaclave_ma.errors import ConfigError
from teaclave_ma.rpc.client import PeerClient


@attrs.frozen
class ServiceContext:
    name: str
    state_dir: Path
    peers: Mapping[str, PeerClient]

    def client(self, service: str) -> PeerClient:
        """The attested client for an outbound peer named in service.yaml."""
        try:
            return self.peers[service]
        except KeyError:
            allowed = ", ".join(sorted(self.peers)) or "none"
            raise ConfigError(
                "outbound", f"{self.name} may not call {service!r} (outbound: {allowed})"
            ) from None
