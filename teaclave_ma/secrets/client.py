"""Fetching secrets from the key-provisioning service over attested RPC."""

from __future__ import annotations

import base64
import binascii

from teaclave_ma.errors import InputError
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.secrets.policy import SecretRefused, SecretValue

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
