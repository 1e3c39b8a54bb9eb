"""Fixtures of the RPC tests: a plain mutual-TLS echo server whose peer check counts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.transport import CaPeer
from teaclave_ma.rpc.server import MutualTlsServer
from tests.rpc.test_peer_check import Counting, Echo, ca_check, started_server


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def server_check() -> Counting:
    """The server's peer check; it runs once per handshake, so it counts them."""
    return Counting(ca_check("server"))


@pytest.fixture
def server(echo: Echo, server_check: Counting) -> Iterator[MutualTlsServer[CaPeer]]:
    server = started_server(echo, server_check)
    yield server
    server.stop()
