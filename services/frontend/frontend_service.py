"""The frontend: the one service user apps talk to. It authenticates users through the
authentication service and keeps each user's data in storage under the user's name."""

from __future__ import annotations

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.transport.peer_verify import PeerIdentity

BAD_KEY = -32010


def build(context: ServiceContext) -> Service:
    service = Service(context.name)
    authentication = context.client("authentication")
    storage = context.client("storage")

    def user_of(token: str) -> str:
        user: str = authentication.call("verify", token=token)
        return user

    def user_key(user: str, key: str) -> str:
        if not key or "/" in key:
            raise RpcError(BAD_KEY, "key must be non-empty and contain no '/'")
        return f"{user}/{key}"

    @service.handler()
    def register(peer: PeerIdentity, user: str, password: str) -> dict[str, str]:
        return {"registered": authentication.call("register", user=user, password=password)}

    @service.handler()
    def login(peer: PeerIdentity, user: str, password: str) -> dict[str, str]:
        return {"token": authentication.call("login", user=user, password=password)}

    @service.handler()
    def put(peer: PeerIdentity, token: str, key: str, value: str) -> dict[str, bool]:
        storage.call("put", key=user_key(user_of(token), key), value=value)
        return {"stored": True}

    @service.handler()
    def get(peer: PeerIdentity, token: str, key: str) -> dict[str, str | None]:
        return {"value": storage.call("get", key=user_key(user_of(token), key))}

    return service
