"""teaclave-ma: mutual remote attestation with auditor signatures between confidential services.

The documented surface (docs/api.md) is what this package exports; everything else is
internal and may change. Writing a service::

    from teaclave_ma import PeerIdentity, RpcError, Service, ServiceContext

Calling one from outside any enclave::

    import teaclave_ma
    client = teaclave_ma.connect("10.0.0.5:7000", service="frontend", manifest=...,
                                 signatures=..., trust=...)

Names are imported on first use, so ``import teaclave_ma`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "Service": "teaclave_ma.rpc.service",
    "ServiceContext": "teaclave_ma.runtime.context",
    "PeerIdentity": "teaclave_ma.transport.peer_verify",
    "UnattestedPeer": "teaclave_ma.rpc.outside",
    "Caller": "teaclave_ma.rpc.outside",
    "RpcError": "teaclave_ma.rpc.jsonrpc",
    "Client": "teaclave_ma.caller",
    "AsyncClient": "teaclave_ma.caller",
    "connect": "teaclave_ma.caller",
    "connect_async": "teaclave_ma.caller",
    "fetch_certificate": "teaclave_ma.caller",
    "TeaclaveMAError": "teaclave_ma.errors",
    "InputError": "teaclave_ma.errors",
    "ConfigError": "teaclave_ma.errors",
    "VerificationError": "teaclave_ma.errors",
    "TransportError": "teaclave_ma.transport.tls",
    "RefusedByPeer": "teaclave_ma.transport.tls",
}

__all__ = [
    "AsyncClient",
    "Caller",
    "Client",
    "ConfigError",
    "InputError",
    "PeerIdentity",
    "RefusedByPeer",
    "RpcError",
    "Service",
    "ServiceContext",
    "TeaclaveMAError",
    "TransportError",
    "UnattestedPeer",
    "VerificationError",
    "__version__",
    "connect",
    "connect_async",
    "fetch_certificate",
]

if TYPE_CHECKING:
    from teaclave_ma.caller import (
        AsyncClient,
        Client,
        connect,
        connect_async,
        fetch_certificate,
    )
    from teaclave_ma.errors import ConfigError, InputError, TeaclaveMAError, VerificationError
    from teaclave_ma.rpc.jsonrpc import RpcError
    from teaclave_ma.rpc.outside import Caller, UnattestedPeer
    from teaclave_ma.rpc.service import Service
    from teaclave_ma.runtime.context import ServiceContext
    from teaclave_ma.transport.peer_verify import PeerIdentity
    from teaclave_ma.transport.tls import RefusedByPeer, TransportError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'teaclave_ma' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
