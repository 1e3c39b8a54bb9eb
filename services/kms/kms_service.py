"""The key-provisioning service. It releases each named secret only to attested peers that
the signed ``secrets:`` section of the manifest in force allows, re-checking the caller
against that manifest at release time. Its values come in from the owners measured into
its trust file, over TLS on which they attested the kms, in requests they signed; it keeps
them sealed under its own sealing key (``teaclave_ma.secrets.store``). No host file holds
a value or decides who receives one. Every release, refusal and change is logged, without
values."""

from __future__ import annotations

import base64
import binascii
import logging

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.secrets.client import OWNER_REFUSED, SECRET_REFUSED
from teaclave_ma.secrets.owner import (
    Caller,
    OwnerPeer,
    OwnerRefused,
    OwnerRequest,
    check_signed,
    value_digest,
)
from teaclave_ma.secrets.policy import SecretRefused, SecretValue, log_relaxations, release
from teaclave_ma.secrets.store import SecretStore
from teaclave_ma.transport.peer_verify import PeerIdentity

log = logging.getLogger("kms")


def build(context: ServiceContext) -> Service:
    store = SecretStore(
        context.state_dir, context.state_sealer(), initialize=context.initialize_state
    )
    owners = {owner.key_id: owner for owner in context.owners}
    log_relaxations(context.current_manifest().manifest)
    service = Service(context.name)

    def owner(peer: Caller) -> OwnerPeer:
        if not isinstance(peer, OwnerPeer):
            raise RpcError(OWNER_REFUSED, "only an owner may do this", {"rule": "owner.caller"})
        return peer

    @service.handler()
    def get_secret(peer: Caller, name: str) -> dict[str, str]:
        if not isinstance(peer, PeerIdentity):
            raise RpcError(SECRET_REFUSED, "owners put secrets; they do not fetch them")
        try:
            value = release(name, store.values(), peer, context.current_manifest())
        except SecretRefused as exc:
            log.warning("refused secret %r to %s: %s", name, peer.describe(), exc)
            raise RpcError(SECRET_REFUSED, str(exc), {"rule": exc.check}) from None
        return {"value": base64.b64encode(value.reveal()).decode()}

    @service.handler()
    def list_secrets(peer: Caller) -> dict[str, object]:
        owner(peer)
        return {"store": store.store_id, "secrets": store.versions()}

    @service.handler()
    def next_version(peer: Caller, name: str) -> int:
        owner(peer)
        return store.next_version(name)

    @service.handler()
    def change_secret(
        peer: Caller, *, operation: str, name: str, version: int, value: str | None, signature: str
    ) -> int:
        caller = owner(peer)
        try:
            plain = None if value is None else SecretValue(base64.b64decode(value, validate=True))
            signed = bytes.fromhex(signature)
        except (binascii.Error, ValueError):
            raise RpcError(
                OWNER_REFUSED, "value or signature is malformed", {"rule": "owner.request"}
            ) from None
        request = OwnerRequest(
            operation,
            name,
            version,
            value_digest(None if plain is None else plain.reveal()),
            store.store_id,
        )
        try:
            # The signer must be the owner the TLS handshake proved.
            check_signed(request, caller.key_id, signed, owners, store.store_id)
            store.apply(request, plain)
        except OwnerRefused as exc:
            log.warning(
                "refused %s of secret %r by %s: %s", operation, name, caller.describe(), exc
            )
            raise RpcError(OWNER_REFUSED, str(exc), {"rule": exc.check}) from None
        log.info("%s of secret %r, version %d, by %s", operation, name, version, caller.describe())
        return version

    return service
