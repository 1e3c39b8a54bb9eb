"""The server and client take their peer check as a parameter; the same code runs plain
mutual TLS 1.3 with the benchmarks' CA check, which must really verify."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import resource
import select
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

import teaclave_ma.rpc.client as client_module
import teaclave_ma.rpc.server as server_module
from benchmarks.transport import (
    CaPeer,
    CaVerifier,
    create_ca,
    echo_service,
    issue,
)
from teaclave_ma.errors import VerificationError
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.rpc.client import MutualTlsClient
from teaclave_ma.rpc.http import send_message
from teaclave_ma.rpc.server import MutualTlsServer
from teaclave_ma.transport.credentials import FixedCredentials, TlsCredentials
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer, TransportError
from tests.helpers import wait_until

CA = create_ca()
OTHER_CA = create_ca()


class Counting:
    """A peer check that counts how often it runs and what it decided."""

    def __init__(self, check: CaVerifier) -> None:
        self.check = check
        self.calls = 0

    def verify(self, certificate: bytes, services: Sequence[str]) -> CaPeer:
        self.calls += 1
        return self.check.verify(certificate, services)

    def recheck(self, peer: CaPeer) -> None:
        self.check.recheck(peer)


class Echo:
    """The echo service, remembering whether any request reached it."""

    def __init__(self) -> None:
        self.service = echo_service()
        self.name = self.service.name
        self.requests = 0

    def dispatch(self, peer: CaPeer, method: str, params: dict[str, Any]) -> Any:
        self.requests += 1
        return self.service.dispatch(peer, method, params)


def ca_check(role: str) -> CaVerifier:
    """The check ``role`` ("server" or "client") makes of its peer."""
    peer: Literal["client", "server"] = "client" if role == "server" else "server"
    return CaVerifier(x509.load_pem_x509_certificate(CA[1]), peer_role=peer)


def credentials(name: str, ca: tuple[bytes, bytes] = CA, **kwargs: Any) -> FixedCredentials:
    return FixedCredentials(issue(*ca, name, **kwargs))


def started_server(
    echo: Echo, check: Counting, limits: ServerLimits | None = None
) -> MutualTlsServer[CaPeer]:
    server = MutualTlsServer(
        echo,
        credentials("server"),
        check,
        inbound=["client"],
        address=("127.0.0.1", 0),
        limits=limits,
    )
    server.start()
    return server


def client_of(
    server: MutualTlsServer[CaPeer], creds: FixedCredentials | None = None, service: str = "server"
) -> MutualTlsClient[CaPeer]:
    return MutualTlsClient(
        service, server.address, creds or credentials("client"), ca_check("client"), timeout=10
    )


def test_plain_mutual_tls_runs_on_the_same_code_and_checks_once_per_handshake(
    server: MutualTlsServer[CaPeer], server_check: Counting, echo: Echo
) -> None:
    counting_client = Counting(ca_check("client"))
    client = MutualTlsClient("server", server.address, credentials("client"), counting_client)
    with client:
        assert client.call("echo", value=[1, "two"]) == [1, "two"]
        assert client.call("echo", value=3) == 3  # same connection
        assert client.peer is not None and client.peer.service == "server"
    # OpenSSL calls back more than once for a leaf it cannot chain; the check runs once.
    assert (server_check.calls, counting_client.calls, echo.requests) == (1, 1, 2)


def test_a_client_certificate_from_another_ca_is_refused_before_any_request(
    server: MutualTlsServer[CaPeer], echo: Echo
) -> None:
    client = client_of(server, credentials("client", OTHER_CA))
    with pytest.raises(RefusedByPeer):
        client.call("echo", value=1)
    assert client.peer is None  # the refused connection is not kept
    assert echo.requests == 0
    # The client may read the alert before the server's thread has counted the refusal.
    wait_until(lambda: server.rejections != 0)
    assert server.rejections == 1


def test_a_refusal_that_closed_the_connection_before_the_request_is_named_to_the_client(
    server: MutualTlsServer[CaPeer], echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst order of events: the server refuses the client's certificate (after the
    client's TLS 1.3 handshake is over) and resets the connection, all before the client
    sends its request. The client still learns why, not just "connection reset"."""
    closed = threading.Event()

    def reset_at_once(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        closed.set()

    def send_once_closed(*args: Any, **kwargs: Any) -> None:
        assert closed.wait(10)
        send_message(*args, **kwargs)

    monkeypatch.setattr(server_module, "_close_after_refusal", reset_at_once)
    monkeypatch.setattr(client_module, "send_message", send_once_closed)
    for _ in range(3):
        closed.clear()
        client = client_of(server, credentials("client", OTHER_CA))
        with client, pytest.raises(RefusedByPeer, match="unknown ca"):
            client.call("echo", value=1)
    assert echo.requests == 0


def silent_from(source: str, server: MutualTlsServer[CaPeer], count: int) -> list[socket.socket]:
    """``count`` TCP connections to ``server`` from the loopback address ``source`` that
    never send a byte."""
    made = []
    for _ in range(count):
        sock = socket.create_connection(server.address, timeout=10, source_address=(source, 0))
        made.append(sock)
    return made


def closed_by_server(sock: socket.socket) -> bool:
    return sock.recv(1) == b""  # blocks until the server closes it (or the timeout)


def still_open(sock: socket.socket) -> bool:
    return not select.select([sock], [], [], 0)[0]


def test_silent_connections_hold_one_share_per_source_and_the_oldest_make_room(
    echo: Echo, server_check: Counting
) -> None:
    # The deadline outlasts the test: only admission can end a silent connection.
    limits = ServerLimits(
        max_connections=16, max_handshakes=4, max_handshakes_per_source=2, handshake_timeout=60.0
    )
    server = started_server(echo, server_check, limits)
    established = client_of(server)
    silent: list[socket.socket] = []
    try:
        assert established.call("echo", value="before") == "before"
        first = silent_from("127.0.0.2", server, 3)
        second = silent_from("127.0.0.3", server, 2)
        silent = first + second
        # One source holds at most its share: its next connection is closed at once.
        assert closed_by_server(first[2])
        # Every handshake slot is taken (two sources, two each). A new connection ends the
        # oldest handshake of a source holding the most, and completes its own.
        with client_of(server) as honest:
            assert honest.call("echo", value="honest") == "honest"
        assert closed_by_server(first[0])
        assert all(still_open(sock) for sock in (first[1], *second))
        assert (server.admission.refused, server.admission.evicted) == (1, 1)
        assert established.call("echo", value="after") == "after"  # never evicted
    finally:
        for sock in silent:
            sock.close()
        established.close()
        server.stop()


@pytest.mark.parametrize(
    ("address", "source"),
    [
        (("192.0.2.7", 4000), "192.0.2.7"),
        (("::ffff:192.0.2.7", 4000, 0, 0), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 4000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 4000, 0, 0), "2001:db8:1:2::/64"),  # the same host's /64
    ],
)
def test_connections_count_against_their_ipv4_address_or_ipv6_64(
    address: tuple[Any, ...], source: str
) -> None:
    assert server_module.source_of(address) == source


def test_a_read_timeout_names_the_service_its_address_and_the_method(
    server: MutualTlsServer[CaPeer], echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = threading.Event()

    def stalled(*args: Any) -> Any:
        answer.wait(10)
        return None

    monkeypatch.setattr(echo, "dispatch", stalled)
    client = MutualTlsClient(
        "server", server.address, credentials("client"), ca_check("client"), timeout=0.3
    )
    host, port = server.address
    try:
        with (
            client,
            pytest.raises(
                TransportError, match=re.escape(f"server at {host}:{port}, calling echo: timed out")
            ),
        ):
            client.call("echo", value=1)
    finally:
        answer.set()


def test_the_client_refuses_a_server_named_otherwise(server: MutualTlsServer[CaPeer]) -> None:
    with pytest.raises(PeerRejected) as refused, client_of(server, service="storage") as client:
        client.call("echo", value=1)
    assert refused.value.check == "ca_chain"  # no certificate for the name "storage"


def test_the_server_refuses_a_client_not_on_its_inbound_list(
    server: MutualTlsServer[CaPeer], echo: Echo
) -> None:
    with pytest.raises(RefusedByPeer), client_of(server, credentials("intruder")) as client:
        client.call("echo", value=1)
    assert echo.requests == 0


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    ("role", "ca", "now", "expected", "check"),
    [
        ("server", OTHER_CA, NOW, "client", "ca_chain"),
        ("server", CA, NOW - dt.timedelta(hours=3), "client", "ca_chain"),  # expired
        ("server", CA, NOW + dt.timedelta(hours=1), "client", "ca_chain"),  # not yet valid
        ("server", CA, NOW, "storage", "peer_name"),  # a good certificate, another name
        ("client", OTHER_CA, NOW, "client", "ca_chain"),
        ("client", CA, NOW, "server", "ca_chain"),  # a certificate for "client", not "server"
    ],
)
def test_the_ca_check_refuses(
    role: str, ca: tuple[bytes, bytes], now: dt.datetime, expected: str, check: str
) -> None:
    certificate = issue(*ca, "client", now=now).certificate.public_bytes(Encoding.DER)
    with pytest.raises(VerificationError) as refused:
        ca_check(role).verify(certificate, [expected])
    assert refused.value.check == check


def test_the_ca_check_accepts_its_own_certificates_for_their_name() -> None:
    certificate = issue(*CA, "client").certificate.public_bytes(Encoding.DER)
    assert ca_check("server").verify(certificate, ["other", "client"]).service == "client"
    assert ca_check("client").verify(certificate, ["other", "client"]).service == "client"


def test_the_ca_check_refuses_garbage_and_an_empty_edge() -> None:
    with pytest.raises(VerificationError, match="unreadable"):
        ca_check("server").verify(b"\x30\x03junk", ["client"])
    with pytest.raises(VerificationError, match="no service is allowed"):
        ca_check("server").verify(b"", [])


def test_connections_work_on_descriptors_above_1024(server: MutualTlsServer[CaPeer]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the descriptor limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    # Fill the low descriptors so the client's socket (and the server's) land above 1024,
    # where select() cannot wait on them.
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with client_of(server) as client:
            assert client.call("echo", value="high") == "high"
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class FailingOnDemand:
    """Server credentials that fail (as a quoting backend might) while ``failing`` is set."""

    def __init__(self) -> None:
        self.good = credentials("server")
        self.failing = False

    def current(self) -> TlsCredentials:
        if self.failing:
            raise RuntimeError("the attester is unavailable")
        return self.good.current()


def test_connections_whose_handshake_fails_unexpectedly_give_their_slots_back(
    echo: Echo, server_check: Counting
) -> None:
    source = FailingOnDemand()
    server = MutualTlsServer(
        echo,
        source,
        server_check,
        inbound=["client"],
        address=("127.0.0.1", 0),
        limits=ServerLimits(max_connections=2, max_handshakes=2),
    )
    server.start()
    try:
        source.failing = True
        for _ in range(3):  # more than the limits: a leaked slot would lock everyone out
            with pytest.raises(TransportError):
                client_of(server).call("echo", value="refused")
        source.failing = False
        assert client_of(server).call("echo", value="after") == "after"
    finally:
        server.stop()


def test_a_client_closing_mid_handshake_is_a_closed_connection_not_a_refusal(
    server: MutualTlsServer[CaPeer], caplog: pytest.LogCaptureFixture
) -> None:
    """close_notify after the ClientHello: the client left; nobody refused anybody."""
    caplog.set_level(logging.INFO, logger=server_module.__name__)
    hello = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    hello.set_connect_state()
    with contextlib.suppress(SSL.WantReadError):
        hello.do_handshake()
    close_notify = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00])  # a TLS alert record
    with socket.create_connection(server.address) as sock:
        sock.sendall(hello.bio_read(65536) + close_notify)
        assert wait_until(lambda: "the peer closed the connection" in caplog.text)
    assert server.rejections == 0
