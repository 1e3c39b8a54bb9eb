"""A user-facing app enclave: it serves nothing and calls the frontend."""

from __future__ import annotations

from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext


def build(context: ServiceContext) -> Service:
    return Service(context.name)
