"""Talking to the key-provisioning service: services fetch secrets, owners change them."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.errors import InputError
from teaclave_ma.rpc.client import MutualTlsClient, PeerClient
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.secrets.owner import OwnerRefused, OwnerRequest, owner_credentials, value_digest
from teaclave_ma.secrets.policy import SecretRefused, SecretValue
from teaclave_ma.transport.credentials import FixedCredentials, utc_now
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import PeerAuthenticator

KMS_SERVICE = "kms"
SECRET_REFUSED = -32040


def fetch_secret(kms: PeerClient, name: str) -> SecretValue:
    """The secret ``name``; the kms must be attested as the manifest's ``kms`` (the client's
    verifier sees to that) and its policy must release the secret to us (or RpcError)."""
    try:
        answer = kms.call("get_secret", name=name)
    except RpcError as exc:
        if exc.code == SECRET_REFUSED:
            rule = exc.data.get("rule") if isinstance(exc.data, dict) else None
            raise SecretRefused(str(rule or "secrets"), f"kms refused: {exc.message}") from exc
        raise
    if not isinstance(answer, dict) or not isinstance(answer.get("value"), str):
        raise InputError("get_secret", "the kms answered without a value")
    try:
        return SecretValue(base64.b64decode(answer["value"], validate=True))
    except (binascii.Error, ValueError):
        raise InputError("get_secret", "the kms answered with a value that is not base64") from None


OWNER_REFUSED = -32041


def owner_refusal(exc: RpcError, service: str) -> OwnerRefused | None:
    """The typed refusal an owner's request met (naming the rule); None for other errors."""
    if exc.code != OWNER_REFUSED:
        return None
    rule = exc.data.get("rule") if isinstance(exc.data, dict) else None
    return OwnerRefused(str(rule or "owner"), f"{service} refused: {exc.message}")


class KmsOwnerClient:
    """An owner's connection to the kms, from outside any enclave: the kms is verified as
    the manifest's ``kms`` before a byte is sent (``verifier``), and every change is signed
    for the kms's store and the secret's next version."""

    def __init__(
        self,
        address: tuple[str, int],
        key: AuditorSigningKey,
        verifier: PeerAuthenticator[PeerIdentity],
        *,
        name: str = "owner",
    ) -> None:
        self._key = key
        credentials = FixedCredentials(owner_credentials(key, name, utc_now()))
        self._client = MutualTlsClient(KMS_SERVICE, address, credentials, verifier)

    def __enter__(self) -> KmsOwnerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def _call(self, method: str, **params: Any) -> Any:
        try:
            return self._client.call(method, **params)
        except RpcError as exc:
            refusal = owner_refusal(exc, KMS_SERVICE)
            if refusal is None:
                raise
            raise refusal from exc

    def listing(self) -> tuple[str, dict[str, int]]:
        """The kms's store id and its secrets' names and versions (never values)."""
        answer = self._call("list_secrets")
        if not isinstance(answer, dict) or not isinstance(answer.get("secrets"), dict):
            raise InputError("list_secrets", "the kms answered without a listing")
        return str(answer["store"]), dict(answer["secrets"])

    def change(self, operation: str, name: str, value: SecretValue | None = None) -> int:
        """Put, rotate or delete ``name``; returns the secret's new version."""
        store, _ = self.listing()
        version = int(self._call("next_version", name=name))
        request = OwnerRequest(
            operation, name, version, value_digest(None if value is None else value.reveal()), store
        )
        return int(
            self._call(
                "change_secret",
                operation=operation,
                name=name,
                version=version,
                value=None if value is None else base64.b64encode(value.reveal()).decode(),
                signature=request.sign(self._key).hex(),
            )
        )
