"""One client serves concurrent calls from a bounded pool of verified connections.

Handshakes are counted by the server's peer check, which runs once per connection."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import teaclave_ma.rpc.client as client_module
from benchmarks.transport import CaPeer
from teaclave_ma.errors import ConfigError
from teaclave_ma.rpc.client import ConnectionLimitReached, MutualTlsClient
from teaclave_ma.rpc.http import send_message
from teaclave_ma.rpc.server import MutualTlsServer
from teaclave_ma.transport.tls import TransportError
from tests.helpers import wait_until
from tests.rpc.test_peer_check import (
    Counting,
    Echo,
    FailingOnDemand,
    ca_check,
    credentials,
)

WAIT = 10.0  # bounds every wait, so a broken pool fails the test instead of hanging it


def pooled(
    server: MutualTlsServer[CaPeer], max_connections: int = 8, timeout: float = WAIT
) -> MutualTlsClient[CaPeer]:
    return MutualTlsClient(
        "server",
        server.address,
        credentials("client"),
        ca_check("client"),
        timeout=timeout,
        max_connections=max_connections,
    )


class HeldSends:
    """Calls made from threads named ``holding…`` stop just before sending their request
    (their connection already open and verified) until ``release`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.held = threading.Semaphore(0)
        monkeypatch.setattr(client_module, "send_message", self._send)

    def _send(self, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name.startswith("holding"):
            self.held.release()
            assert self.release.wait(WAIT)
        send_message(*args, **kwargs)

    def start(self, client: MutualTlsClient[CaPeer], count: int) -> list[Future[Any]]:
        """``count`` calls, each held with its connection taken."""
        pool = ThreadPoolExecutor(count, thread_name_prefix="holding")
        calls = [pool.submit(client.call, "echo", value=n) for n in range(count)]
        pool.shutdown(wait=False)
        for _ in range(count):
            assert self.held.acquire(timeout=WAIT)
        return calls


def test_calls_from_several_threads_are_in_flight_at_once_on_one_client(
    server: MutualTlsServer[CaPeer],
    echo: Echo,
    server_check: Counting,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each request is answered only once four are inside the server together: a client
    # that sent one request at a time would break the barrier instead.
    meeting = threading.Barrier(4, timeout=WAIT)

    def meet(peer: CaPeer, method: str, params: dict[str, Any]) -> Any:
        meeting.wait()
        return params["value"]

    monkeypatch.setattr(echo, "dispatch", meet)
    with pooled(server) as client, ThreadPoolExecutor(4) as threads:
        assert list(threads.map(lambda n: client.call("echo", value=n), range(4))) == [0, 1, 2, 3]
        assert server_check.calls == 4
        # The four connections went back to the pool and carry the next round.
        assert list(threads.map(lambda n: client.call("echo", value=n), range(4))) == [0, 1, 2, 3]
        assert server_check.calls == 4


def test_sequential_calls_reuse_one_connection(
    server: MutualTlsServer[CaPeer], server_check: Counting
) -> None:
    with pooled(server) as client:
        assert [client.call("echo", value=n) for n in range(5)] == list(range(5))
    assert server_check.calls == 1


def test_a_call_beyond_the_limit_waits_for_a_connection_to_come_back(
    server: MutualTlsServer[CaPeer], server_check: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = HeldSends(monkeypatch)
    client = pooled(server, max_connections=2)
    waiting = threading.Event()
    wait_for_slot = client._pool.wait

    def noted_wait(timeout: float | None = None) -> bool:
        waiting.set()
        return wait_for_slot(timeout)

    monkeypatch.setattr(client._pool, "wait", noted_wait)
    with client, ThreadPoolExecutor(1) as third:
        held = sends.start(client, 2)
        late = third.submit(client.call, "echo", value="late")
        assert waiting.wait(WAIT)  # the third call waits for a connection...
        # ...rather than opening one beyond the limit (the server checks each client
        # certificate just after the client's side of the handshake has finished).
        assert wait_until(lambda: server_check.calls == 2)
        sends.release.set()
        assert [call.result(WAIT) for call in held] == [0, 1]
        assert late.result(WAIT) == "late"
    assert server_check.calls == 2  # it took a connection that came back


def test_a_call_that_finds_no_connection_within_the_timeout_names_the_service_and_limit(
    server: MutualTlsServer[CaPeer], server_check: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = HeldSends(monkeypatch)
    host, port = server.address
    with pooled(server, max_connections=1, timeout=1.0) as client:
        [held] = sends.start(client, 1)
        with pytest.raises(
            ConnectionLimitReached, match=f"server at {host}:{port}: all 1 connections stayed busy"
        ):
            client.call("echo", value="too many")
        sends.release.set()
        assert held.result(WAIT) == 0
        assert client.call("echo", value="after") == "after"  # the wait leaked no slot
    assert server_check.calls == 1


def test_a_connection_whose_call_failed_is_not_reused(
    server: MutualTlsServer[CaPeer], server_check: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = client_module.read_message

    def cut_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(client_module, "read_message", real_read)
        raise TransportError("cut")

    with pooled(server) as client:
        assert client.call("echo", value="before") == "before"
        monkeypatch.setattr(client_module, "read_message", cut_once)
        with pytest.raises(TransportError, match="calling echo: cut"):
            client.call("echo", value="lost")  # its answer stays unread on that connection
        assert client.peer is None
        # A reused connection would hand this call the lost call's answer.
        assert client.call("echo", value="after") == "after"
    assert server_check.calls == 2


def test_calls_that_fail_before_connecting_give_their_slot_back(
    server: MutualTlsServer[CaPeer], server_check: Counting
) -> None:
    source = FailingOnDemand()
    source.good = credentials("client")
    source.failing = True
    client = MutualTlsClient(
        "server", server.address, source, ca_check("client"), timeout=1.0, max_connections=1
    )
    with client:
        for _ in range(2):  # more than the limit: a leaked slot would lock the next call out
            with pytest.raises(RuntimeError, match="attester is unavailable"):
                client.call("echo", value="refused")
        source.failing = False
        assert client.call("echo", value="after") == "after"
    assert server_check.calls == 1


def test_close_closes_idle_connections_now_and_busy_ones_when_their_call_ends(
    server: MutualTlsServer[CaPeer], server_check: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = HeldSends(monkeypatch)
    client = pooled(server)
    assert client.call("echo", value="idle") == "idle"
    held = sends.start(client, 1)  # the idle connection, now busy again
    client.close()
    sends.release.set()
    assert held[0].result(WAIT) == 0
    assert client.peer is None  # not returned to the pool
    assert client.call("echo", value="again") == "again"
    client.close()
    assert client.peer is None
    assert server_check.calls == 2


def test_a_pool_without_connections_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_connections: must be at least 1"):
        MutualTlsClient(
            "server", ("127.0.0.1", 1), credentials("client"), ca_check("client"), max_connections=0
        )
