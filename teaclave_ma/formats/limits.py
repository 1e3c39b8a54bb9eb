"""The bounds of a service's RPC server, and their strict reading from a ``limits:`` mapping.

They decide how much a stranger can make the server hold, so they belong to the measured
service.yaml, not to the host's runtime.yaml. Every field is optional; a missing one keeps
its default. Example::

    limits:
      max_connections: 1024         # connections at once, established or in the handshake
      max_handshakes: 256           # of those, in the handshake at once
      max_handshakes_per_source: 32 # of those, from one IPv4 address or IPv6 /64
      handshake_timeout: 10         # seconds
      idle_timeout: 60              # seconds between requests
      max_request_bytes: 1048576
"""

from __future__ import annotations

import attrs

from teaclave_ma.errors import InputError
from teaclave_ma.formats.strict import expect_int, expect_keys, expect_mapping, join, type_name


@attrs.frozen
class ServerLimits:
    max_connections: int = 1024
    max_handshakes: int = 256  # of those, how many may be in the handshake at once
    # Of those, how many may come from one source: a legitimate host opens a few (a
    # client's pool holds 8 connections per peer service), a flood from one host no more.
    max_handshakes_per_source: int = 32
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_request_bytes: int = 1 << 20


def _seconds(value: object, path: str, high: float) -> float:
    # bool is an int subclass in Python; `handshake_timeout: true` must not pass as 1.
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError(path, f"expected a number of seconds, got {type_name(value)} {value!r}")
    if not 0 < value <= high:
        raise InputError(path, f"expected more than 0 and at most {high:g} seconds, got {value}")
    return float(value)


def parse_limits(value: object, path: str) -> ServerLimits:
    """The ``limits`` mapping at ``path``; errors name the field and what was wrong."""
    mapping = expect_mapping(value, path)
    expect_keys(mapping, path, [], [field.name for field in attrs.fields(ServerLimits)])
    defaults = ServerLimits()

    def count(name: str, high: int) -> int:
        if name not in mapping:
            return int(getattr(defaults, name))
        return expect_int(mapping[name], join(path, name), 1, high)

    def seconds(name: str, high: float) -> float:
        if name not in mapping:
            return float(getattr(defaults, name))
        return _seconds(mapping[name], join(path, name), high)

    limits = ServerLimits(
        max_connections=count("max_connections", 1 << 20),
        max_handshakes=count("max_handshakes", 1 << 20),
        max_handshakes_per_source=count("max_handshakes_per_source", 1 << 20),
        handshake_timeout=seconds("handshake_timeout", 3600.0),
        idle_timeout=seconds("idle_timeout", 86400.0),
        max_request_bytes=count("max_request_bytes", 1 << 30),
    )
    # The smaller bounds are shares of the larger ones; a share larger than its whole
    # would silently be the whole.
    for part, whole in (
        ("max_handshakes", "max_connections"),
        ("max_handshakes_per_source", "max_handshakes"),
    ):
        if getattr(limits, part) > getattr(limits, whole):
            raise InputError(
                join(path, part),
                f"{getattr(limits, part)} is more than {whole} ({getattr(limits, whole)})",
            )
    return limits
