"""Fault: a peer's certificate expires while a long-lived connection is open.

The behaviour: a connection is worth no more than the evidence it was opened with. Before
each request on an open connection, each side re-checks the other (``PeerVerifier.recheck``)
and refuses once the peer's certificate (or its quote's collateral) has expired: the server
answers 403 and closes; the client does not send on it but connects anew, as it does when
its own certificate has rotated. Both sides rotate their certificates before they expire,
so the new connection presents fresh evidence and is accepted. The clocks are the test's:
expiry happens exactly when the test says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.server import RpcServer
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.transport.credentials import RotatingCredentials
from teaclave_ma.transport.errors import EvidenceError
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.tls import PeerRejected, TransportError
from tests.helpers import MovableClock, record_requests
from tests.integration.conftest import RuntimeFactory, deployment, runtimes  # noqa: F401

SHORT = dt.timedelta(minutes=10)  # the certificate that expires during the connection
LONG = dt.timedelta(hours=1)  # the other side's, which stays valid throughout
PAST_SHORT = SHORT + dt.timedelta(minutes=1)


@attrs.frozen
class Edge:
    """frontend -> storage, each with its own rotating certificate, on the test's clock."""

    client: PeerClient
    client_credentials: RotatingCredentials
    server_credentials: RotatingCredentials


def credentials(
    node: EnclaveNode, clock: MovableClock, lifetime: dt.timedelta
) -> RotatingCredentials:
    return RotatingCredentials(
        node.attestation.attester,
        node.image.service.name,
        manifest=node.keeper.in_force,
        lifetime=lifetime,
        refresh_before=lifetime / 5,
        clock=clock,
    )


def verifier(node: EnclaveNode, clock: MovableClock) -> PeerVerifier:
    return PeerVerifier(
        node.keeper, node.attestation.anchor, node.attestation.collateral_for, clock=clock
    )


EdgeFactory = Callable[..., Edge]


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def edge(runtimes: RuntimeFactory, clock: MovableClock) -> Iterator[EdgeFactory]:  # noqa: F811
    servers: list[RpcServer] = []

    def make(
        *,
        client_lifetime: dt.timedelta,
        server_lifetime: dt.timedelta,
        client_clock: MovableClock | None = None,
        server_clock: MovableClock | None = None,
    ) -> Edge:
        storage = runtimes("storage")
        server_clock_ = server_clock or clock
        server_credentials = credentials(storage, server_clock_, server_lifetime)
        server = RpcServer(
            storage.service,
            server_credentials,
            verifier(storage, server_clock_),
            inbound=["frontend"],
            address=("127.0.0.1", 0),
        )
        servers.append(server)
        address = server.start()
        frontend = runtimes("frontend", storage=address, authentication=address)
        client_clock_ = client_clock or clock
        client_credentials = credentials(frontend, client_clock_, client_lifetime)
        client = PeerClient(
            "storage", address, client_credentials, verifier(frontend, client_clock_)
        )
        return Edge(client, client_credentials, server_credentials)

    yield make
    for server in servers:
        server.stop()


def test_the_server_refuses_a_client_whose_certificate_expired_and_it_reconnects_fresh(
    edge: EdgeFactory, clock: MovableClock
) -> None:
    # The client's clock lags the server's, so it sends on the open connection with a
    # certificate it does not yet know has expired.
    client_clock = MovableClock(clock.now)
    frontend = edge(client_lifetime=SHORT, server_lifetime=LONG, client_clock=client_clock)
    assert frontend.client.call("put", key="k", value="v") is True
    clock.advance(PAST_SHORT)
    with pytest.raises(
        TransportError, match=r"HTTP 403.*certificate frontend connected with expired"
    ):
        frontend.client.call("get", key="k")  # the open connection: refused, then closed
    assert frontend.client_credentials.generation == 1
    # Once the client sees the time too, it connects anew with a rotated certificate.
    client_clock.advance(PAST_SHORT)
    assert frontend.client.call("get", key="k") == "v"
    assert frontend.client_credentials.generation == 2


def test_the_client_sends_nothing_to_a_server_whose_certificate_expired_and_reconnects_fresh(
    edge: EdgeFactory, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frontend = edge(client_lifetime=LONG, server_lifetime=SHORT)
    assert frontend.client.call("put", key="k", value="v") is True
    stale = frontend.client.peer
    assert stale is not None
    requests_read = record_requests(monkeypatch)
    clock.advance(PAST_SHORT)
    assert frontend.client.call("get", key="k") == "v"
    assert frontend.client.peer is not None
    assert frontend.client.peer.certificate_sha256 != stale.certificate_sha256
    assert frontend.server_credentials.generation == 2
    assert len(requests_read) == 1  # only on the new connection


def test_the_client_refuses_a_server_still_presenting_an_expired_certificate(
    edge: EdgeFactory, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's clock lags, so it does not rotate: the new connection presents the
    # same expired certificate, and the client refuses it in the handshake.
    frontend = edge(
        client_lifetime=LONG, server_lifetime=SHORT, server_clock=MovableClock(clock.now)
    )
    assert frontend.client.call("put", key="k", value="v") is True
    requests_read = record_requests(monkeypatch)
    clock.advance(PAST_SHORT)
    with pytest.raises(PeerRejected) as caught:
        frontend.client.call("get", key="k")
    assert isinstance(caught.value.reason, EvidenceError)
    assert caught.value.check == "certificate_validity"
    assert frontend.client.peer is None  # neither connection is kept
    assert frontend.server_credentials.generation == 1
    assert requests_read == []


@pytest.mark.parametrize("expiring", ["client", "server"])
def test_no_call_fails_when_certificates_rotate_before_they_expire(
    edge: EdgeFactory, clock: MovableClock, expiring: str
) -> None:
    """Both sides rotate ahead of expiry, so nothing need fail: a client that notices its
    own certificate rotated, or the server's expired, can reconnect before sending a byte."""
    lifetimes: dict[str, Any] = {
        "client_lifetime": SHORT if expiring == "client" else LONG,
        "server_lifetime": SHORT if expiring == "server" else LONG,
    }
    frontend = edge(**lifetimes)
    assert frontend.client.call("put", key="k", value="v") is True
    clock.advance(PAST_SHORT)
    assert frontend.client.call("get", key="k") == "v"
