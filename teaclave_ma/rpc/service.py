"""What a service author writes: named handlers that receive the verified peer and named params.

::

    service = Service("storage")

    @service.handler()
    def get(peer: PeerIdentity, key: str) -> str | None:
        ...

A handler's first argument is always the attested caller; the rest are the JSON-RPC
params by name. Raise ``RpcError`` to answer with a specific error; any other exception
becomes an "internal error" answer and is logged here, never sent to the peer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from teaclave_ma.rpc.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError
from teaclave_ma.transport.tls import Peer

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)


class Service:
    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[str, tuple[Handler, inspect.Signature]] = {}

    def handler(self, name: str | None = None) -> Callable[[H], H]:
        def register(function: H) -> H:
            method = name or function.__name__
            if method in self._handlers:
                raise ValueError(f"handler {method!r} is registered twice in service {self.name!r}")
            self._handlers[method] = (function, inspect.signature(function))
            return function

        return register

    def dispatch(self, peer: Peer, method: str, params: dict[str, Any]) -> Any:
        try:
            function, signature = self._handlers[method]
        except KeyError:
            raise RpcError(
                METHOD_NOT_FOUND, f"service {self.name!r} has no method {method!r}"
            ) from None
        try:
            bound = signature.bind(peer, **params)
        except TypeError as exc:
            raise RpcError(INVALID_PARAMS, f"{method}: {exc}") from None
        try:
            return function(*bound.args, **bound.kwargs)
        except RpcError:
            raise
        except Exception:
            log.exception("handler %s.%s failed (caller %s)", self.name, method, peer.describe())
            raise RpcError(
                INTERNAL_ERROR, f"{method} failed inside service {self.name!r}"
            ) from None
