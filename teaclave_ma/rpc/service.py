"""What a service author writes: named handlers that receive the verified peer and named params.

::

    service = Service("storage")

    @service.handler()
    def get(peer: PeerIdentity, key: str) -> str | None:
        ...

A handler's first argument is always the caller (``peer.attested`` says whether it is an
attested enclave; only edges opened in service.yaml admit other callers); the rest are the
JSON-RPC params by name, checked against their annotations before the handler runs (see
``rpc.params``: a mismatch answers -32602 naming the parameter and the type). Raise ``RpcError`` to answer with a specific error; any other exception
becomes an "internal error" answer and is logged here, never sent to the peer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from teaclave_ma.errors import ConfigError
from teaclave_ma.rpc.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError
from teaclave_ma.rpc.params import Check, parameter_checks
from teaclave_ma.transport.tls import Peer

log = logging.getLogger(__name__)

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)


@attrs.frozen
class _Registered:
    function: Handler
    signature: inspect.Signature
    checks: dict[str, Check]


class Service:
    """A named set of handlers: what a service's entrypoint returns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[str, _Registered] = {}

    def handler(self, name: str | None = None) -> Callable[[H], H]:
        """Register the decorated function as the method ``name`` (its own name unless
        given). Its annotations must be ones ``rpc.params`` can check; registering a
        method twice, or an uncheckable annotation, raises ``ConfigError``."""

        def register(function: H) -> H:
            method = name or function.__name__
            if method in self._handlers:
                raise ConfigError(
                    f"handler {method}", f"is registered twice in service {self.name!r}"
                )
            signature = inspect.signature(function)
            checks = parameter_checks(function, signature, f"handler {method}")
            self._handlers[method] = _Registered(function, signature, checks)
            return function

        return register

    def dispatch(self, peer: Peer, method: str, params: dict[str, Any]) -> Any:
        try:
            registered = self._handlers[method]
        except KeyError:
            raise RpcError(
                METHOD_NOT_FOUND, f"service {self.name!r} has no method {method!r}"
            ) from None
        try:
            bound = registered.signature.bind(peer, **params)
        except TypeError as exc:
            raise RpcError(INVALID_PARAMS, f"{method}: {exc}") from None
        for parameter, value in params.items():
            check = registered.checks.get(parameter)
            problem = check(value, f"parameter {parameter!r}") if check else None
            if problem is not None:
                raise RpcError(INVALID_PARAMS, f"{method}: {problem}")
        try:
            return registered.function(*bound.args, **bound.kwargs)
        except RpcError:
            raise
        except Exception:
            log.exception("handler %s.%s failed (caller %s)", self.name, method, peer.describe())
            raise RpcError(
                INTERNAL_ERROR, f"{method} failed inside service {self.name!r}"
            ) from None
