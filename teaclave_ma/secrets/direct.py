"""A user provisions a service directly (the Cosmian flow): an owner outside any enclave
attests the service against the signed manifest, then sends it a secret, which the service
receives in a handler it declares. No kms is involved.

The service admits owners where its measured ``inbound`` names ``owners``. Each secret is
sent with a nonce the service issued for it (single use, in memory), signed by the owner
over (``provision``, name, 0, value digest, ``SERVICE:NONCE``): a captured request is good
for nothing once used, and for no other service.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import threading
from collections.abc import Callable, Sequence

from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.formats.trust import TrustedAuditor
from teaclave_ma.rpc.client import MutualTlsClient
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.secrets.client import OWNER_REFUSED, owner_refusal
from teaclave_ma.secrets.owner import (
    Caller,
    OwnerPeer,
    OwnerRefused,
    OwnerRequest,
    check_signed,
    owner_credentials,
    value_digest,
)
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.transport.credentials import FixedCredentials, utc_now
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import PeerAuthenticator

log = logging.getLogger(__name__)

PROVISION = "provision"
MAX_OPEN_NONCES = 64  # issued and not yet used; the oldest is dropped beyond this


def accept_provisioning(
    service: Service,
    owners: Sequence[TrustedAuditor],
    receive: Callable[[str, SecretValue], None],
) -> None:
    """Register the handlers through which owners send ``service`` secrets; ``receive``
    gets each one (name, value) once its request is verified."""
    by_key = {owner.key_id: owner for owner in owners}
    nonces: list[str] = []
    lock = threading.Lock()

    def owner(peer: Caller) -> OwnerPeer:
        if not isinstance(peer, OwnerPeer):
            raise RpcError(OWNER_REFUSED, "only an owner may provision", {"rule": "owner.caller"})
        return peer

    @service.handler("provision_nonce")
    def issue(peer: Caller) -> str:
        owner(peer)
        nonce = secrets.token_hex(16)
        with lock:
            nonces.append(nonce)
            del nonces[:-MAX_OPEN_NONCES]
        return nonce

    @service.handler("provision_secret")
    def provision(peer: Caller, *, name: str, value: str, nonce: str, signature: str) -> None:
        caller = owner(peer)
        try:
            plain = SecretValue(base64.b64decode(value, validate=True))
            signed = bytes.fromhex(signature)
        except (binascii.Error, ValueError):
            raise RpcError(
                OWNER_REFUSED, "value or signature is malformed", {"rule": "owner.request"}
            ) from None
        scope = f"{service.name}:{nonce}"
        request = OwnerRequest(PROVISION, name, 0, value_digest(plain.reveal()), scope)
        try:
            with lock:
                if nonce not in nonces:
                    raise OwnerRefused(
                        "owner.nonce", "the nonce was not issued here, or is already used"
                    )
                check_signed(request, caller.key_id, signed, by_key, scope, operations=(PROVISION,))
                nonces.remove(nonce)
        except OwnerRefused as exc:
            log.warning("refused secret %r from %s: %s", name, caller.describe(), exc)
            raise RpcError(OWNER_REFUSED, str(exc), {"rule": exc.check}) from None
        log.info("received secret %r from %s", name, caller.describe())
        receive(name, plain)


def provision_secret(
    address: tuple[str, int],
    service: str,
    key: AuditorSigningKey,
    verifier: PeerAuthenticator[PeerIdentity],
    *,
    name: str,
    value: SecretValue,
) -> None:
    """Attest ``service`` at ``address`` (``verifier``: against the signed manifest), then
    send it secret ``name``."""
    credentials = FixedCredentials(owner_credentials(key, "owner", utc_now()))
    client = MutualTlsClient(service, address, credentials, verifier)
    try:
        nonce = str(client.call("provision_nonce"))
        scope = f"{service}:{nonce}"
        request = OwnerRequest(PROVISION, name, 0, value_digest(value.reveal()), scope)
        client.call(
            "provision_secret",
            name=name,
            value=base64.b64encode(value.reveal()).decode(),
            nonce=nonce,
            signature=request.sign(key).hex(),
        )
    except RpcError as exc:
        refusal = owner_refusal(exc, service)
        if refusal is None:
            raise
        raise refusal from exc
    finally:
        client.close()
