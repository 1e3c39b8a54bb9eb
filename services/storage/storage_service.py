"""A key-value store. Every attested caller service gets its own namespace: the caller is
taken from the verified peer identity, never from the request."""

from __future__ import annotations

import threading

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.transport.peer_verify import PeerIdentity

MAX_VALUE = 64 * 1024
VALUE_TOO_LARGE = -32030


def build(context: ServiceContext) -> Service:
    service = Service(context.name)
    lock = threading.Lock()
    namespaces: dict[str, dict[str, str]] = {}

    def space(peer: PeerIdentity) -> dict[str, str]:
        return namespaces.setdefault(peer.service, {})

    @service.handler()
    def put(peer: PeerIdentity, key: str, value: str, only_if_absent: bool = False) -> bool:
        if len(value) > MAX_VALUE:
            raise RpcError(VALUE_TOO_LARGE, f"value exceeds {MAX_VALUE} characters")
        with lock:
            store = space(peer)
            if only_if_absent and key in store:
                return False
            store[key] = value
            return True

    @service.handler()
    def get(peer: PeerIdentity, key: str) -> str | None:
        with lock:
            return space(peer).get(key)

    @service.handler()
    def delete(peer: PeerIdentity, key: str) -> bool:
        with lock:
            return space(peer).pop(key, None) is not None

    @service.handler()
    def keys(peer: PeerIdentity, prefix: str = "") -> list[str]:
        with lock:
            return sorted(k for k in space(peer) if k.startswith(prefix))

    return service
