"""The key-provisioning service. It releases each named secret only to attested peers that
the signed ``secrets:`` section of the manifest in force allows, re-checking the caller
against that manifest at release time. The values come from the file named by the
``secrets_file`` setting of the deployment (runtime.yaml); who receives them never does."""

from __future__ import annotations

import base64

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.secrets.client import SECRET_REFUSED
from teaclave_ma.secrets.policy import SecretRefused, log_relaxations, release
from teaclave_ma.secrets.store import parse_secret_values
from teaclave_ma.transport.peer_verify import PeerIdentity


def build(context: ServiceContext) -> Service:
    path = context.setting_path("secrets_file")
    values = parse_secret_values(path.read_bytes(), str(path))
    log_relaxations(context.current_manifest().manifest)
    service = Service(context.name)

    @service.handler()
    def get_secret(peer: PeerIdentity, name: str) -> dict[str, str]:
        try:
            value = release(name, values, peer, context.current_manifest())
        except SecretRefused as exc:
            raise RpcError(SECRET_REFUSED, str(exc), {"rule": exc.check}) from None
        return {"value": base64.b64encode(value.reveal()).decode()}

    return service
