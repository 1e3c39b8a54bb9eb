"""User registration and login. Password records (scrypt hashes) live in storage, in the
namespace storage keeps for this service alone; tokens are HMACs under a key that the
key-provisioning service releases to this enclave only, so every replica of
authentication accepts the tokens of the others."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time

from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.transport.peer_verify import PeerIdentity

USER_NAME = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
TOKEN_LIFETIME = 3600
SCRYPT = {"n": 2**14, "r": 8, "p": 1}

USER_EXISTS = -32020
LOGIN_FAILED = -32021
BAD_TOKEN = -32022
BAD_INPUT = -32023


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)


def build(context: ServiceContext) -> Service:
    service = Service(context.name)
    storage = context.client("storage")
    token_key = context.secret("token-key").reveal()

    def check_user(user: str) -> None:
        if not USER_NAME.fullmatch(user):
            raise RpcError(BAD_INPUT, f"user name must match {USER_NAME.pattern}")

    def sign(payload: bytes) -> str:
        tag = hmac.new(token_key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(payload + tag).decode()

    @service.handler()
    def register(peer: PeerIdentity, user: str, password: str) -> str:
        check_user(user)
        if len(password) < 8:
            raise RpcError(BAD_INPUT, "password must have at least 8 characters")
        salt = secrets.token_bytes(16)
        record = json.dumps({"salt": salt.hex(), "hash": _hash(password, salt).hex()})
        if not storage.call("put", key=f"user/{user}", value=record, only_if_absent=True):
            raise RpcError(USER_EXISTS, f"user {user!r} already exists")
        return user

    @service.handler()
    def login(peer: PeerIdentity, user: str, password: str) -> str:
        check_user(user)
        record = storage.call("get", key=f"user/{user}")
        if record is None:
            _hash(password, b"\0" * 16)  # same work either way: no user-enumeration by timing
            raise RpcError(LOGIN_FAILED, "wrong user name or password")
        fields = json.loads(record)
        if not hmac.compare_digest(
            _hash(password, bytes.fromhex(fields["salt"])), bytes.fromhex(fields["hash"])
        ):
            raise RpcError(LOGIN_FAILED, "wrong user name or password")
        expires = int(time.time()) + TOKEN_LIFETIME
        return sign(json.dumps({"user": user, "expires": expires}).encode())

    @service.handler()
    def verify(peer: PeerIdentity, token: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except ValueError:
            raise RpcError(BAD_TOKEN, "malformed token") from None
        payload, tag = raw[:-32], raw[-32:]
        if len(raw) <= 32 or not hmac.compare_digest(
            hmac.new(token_key, payload, hashlib.sha256).digest(), tag
        ):
            raise RpcError(BAD_TOKEN, "invalid token")
        claims = json.loads(payload)
        if claims["expires"] < time.time():
            raise RpcError(BAD_TOKEN, "token expired")
        return str(claims["user"])

    return service
