"""The key-provisioning service. It releases each named secret only to attested peers that
its policy allows, re-checking the caller against the manifest in force at release time.
Secrets and policy come from the file named by the ``secrets_file`` setting of the
deployment (runtime.yaml), never from the measured image."""

from __future__ import annotations

import base64

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.secrets.client import SECRET_REFUSED
from teaclave_ma.secrets.policy import SecretRefused, parse_secrets_file
from teaclave_ma.transport.peer_verify import PeerIdentity


def build(context: ServiceContext) -> Service:
    path = context.setting_path("secrets_file")
    policy = parse_secrets_file(path.read_bytes(), str(path))
    policy.log_relaxations()
    service = Service(context.name)

    @service.handler()
    def get_secret(peer: PeerIdentity, name: str) -> dict[str, str]:
        try:
            value = policy.release(name, peer, context.current_manifest())
        except SecretRefused as exc:
            raise RpcError(SECRET_REFUSED, str(exc), {"rule": exc.check}) from None
        return {"value": base64.b64encode(value.reveal()).decode()}

    return service
