"""Calling a peer service by name over mutual RA-TLS.

The client connects, verifies that the server is an enclave the manifest accepts for the
service it meant to call, and only then sends a request. Concurrent calls each take a
connection of their own from a small pool (at most ``max_connections`` to the peer; a call
beyond that waits, up to the timeout, for one to come back). An idle connection is
reused only if our own certificate has not rotated since it was opened, the server has not
closed it, and the server still passes the peer check (its certificate or collateral has
not expired, the manifest still accepts it); otherwise the call opens and verifies a new
one. Nothing is ever resent after a request was sent (a call is not retried, since it may
not be idempotent). A connection whose call fails in any way, is cut or is refused is
closed, never returned to the pool (the call raises a ``TransportError``, or
``RefusedByPeer``), and a later call connects and verifies the server afresh.

``MutualTlsClient`` takes its peer check as a parameter; ``PeerClient`` is it with the RA-TLS
check that services use. The benchmarks run the same code with a plain CA check.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from typing import Any, Generic, Self

import attrs
import h11
from OpenSSL import SSL

from teaclave_ma.errors import ConfigError, VerificationError
from teaclave_ma.rpc.http import read_message, rpc_request, send_message
from teaclave_ma.rpc.jsonrpc import decode_response, encode_request
from teaclave_ma.transport.credentials import CredentialSource
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import (
    ContextCache,
    PeerAuthenticator,
    PeerT,
    SecureChannel,
    TransportError,
    handshake,
)

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 << 20
DEFAULT_MAX_CONNECTIONS = 8


class ConnectionLimitReached(TransportError):
    """Every connection the client may hold to its peer stayed busy for the whole timeout."""


@attrs.frozen
class _Connection(Generic[PeerT]):
    channel: SecureChannel[PeerT]
    http: h11.Connection
    opened_with: SSL.Context  # reused only while this is still our current context
    epoch: int  # close() closes what was opened before it, even if busy at the time

    def close(self) -> None:
        self.channel.close()


class MutualTlsClient(Generic[PeerT]):
    def __init__(
        self,
        service: str,
        address: tuple[str, int],
        credentials: CredentialSource | None,  # None: present no certificate (one-way)
        verifier: PeerAuthenticator[PeerT],
        *,
        timeout: float = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ConfigError("max_connections", f"must be at least 1, not {max_connections}")
        self.service = service
        self.address = address
        self._where = f"{address[0]}:{address[1]}"
        self.max_connections = max_connections
        self._contexts = ContextCache(credentials, server=False)
        self._verifier = verifier
        self._timeout = timeout
        # Guards everything below and the context cache; never held while on the network.
        self._pool = threading.Condition()
        self._idle: list[_Connection[PeerT]] = []  # a stack: the most recently used goes first
        self._busy = 0  # connections in a call or being opened
        self._epoch = 0
        self._ids = itertools.count(1)  # next() on it is atomic; ids need only differ

    @property
    def peer(self) -> PeerT | None:
        """The verified server of the connection last returned to the pool, if one is kept."""
        with self._pool:
            return self._idle[-1].channel.peer if self._idle else None

    def prepare(self) -> None:
        """Build the TLS context for our current certificate now (issuing it if due), so
        that the next connection does not: a context is built once per certificate
        generation, and doing it at start keeps it off the first call's path."""
        with self._pool:
            self._contexts.get()

    def connect(self) -> PeerT:
        """Connect and verify now (calls do this on demand); the connection is kept."""
        connection = self._acquire()
        self._release(connection, keep=True)
        return connection.channel.peer

    def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` with named ``params`` (positional-only, so a param may be
        called ``method``); its result, or the ``RpcError`` the service answered."""
        request_id = next(self._ids)
        body = encode_request(request_id, method, params)
        connection = self._acquire()
        keep = False
        try:
            answer = self._exchange(connection, method, body)
            http = connection.http
            keep = h11.MUST_CLOSE not in (http.our_state, http.their_state)
            if keep:
                http.start_next_cycle()
        finally:
            self._release(connection, keep=keep)
        return decode_response(answer, request_id)

    def close(self) -> None:
        """Close every connection: the idle ones now, the busy ones when their call ends."""
        with self._pool:
            idle, self._idle = self._idle, []
            self._epoch += 1
        for connection in idle:
            connection.close()

    def _exchange(self, connection: _Connection[PeerT], method: str, body: bytes) -> bytes:
        channel, http = connection.channel, connection.http
        try:
            try:
                send_message(channel, http, rpc_request(self._where, body), body)
                message = read_message(
                    channel, http, max_body=MAX_RESPONSE_BYTES, timeout=self._timeout
                )
            except TransportError as exc:  # a bare "timed out" must say whom and what
                raise type(exc)(
                    f"{self.service} at {self._where}, calling {method}: {exc}"
                ) from exc
        except h11.ProtocolError as exc:
            raise TransportError(
                f"{self.service} broke HTTP/1.1 framing during {method}: {exc}"
            ) from exc
        if message is None:
            raise TransportError(f"{self.service} closed the connection before answering {method}")
        response, answer = message
        if not isinstance(response, h11.Response) or response.status_code != 200:
            status = getattr(response, "status_code", "?")
            raise TransportError(
                f"{self.service} answered HTTP {status} to {method}: {answer[:200]!r}"
            )
        return answer

    def _acquire(self) -> _Connection[PeerT]:
        """An idle connection that may still carry a request, else a new, verified one.

        Nothing has been sent yet, so replacing a stale connection here is always safe."""
        with self._pool:
            candidate = self._take_slot()
            epoch = self._epoch
        try:
            with self._pool:  # the context cache is not thread-safe
                context = self._contexts.get()  # rotates our certificate when it nears expiry
            while candidate is not None:
                if self._reusable(candidate, context):
                    return candidate
                candidate.close()
                with self._pool:  # the slot passes on to the next idle connection, if any
                    candidate = self._idle.pop() if self._idle else None
            return self._open(context, epoch)
        except BaseException:
            self._release(candidate, keep=False)
            raise

    def _take_slot(self) -> _Connection[PeerT] | None:
        """Count one more busy connection, and take the last idle one if any (the pool's
        lock is held). Idle and busy connections together never exceed the limit."""
        deadline = time.monotonic() + self._timeout
        while not self._idle and self._busy >= self.max_connections:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionLimitReached(
                    f"{self.service} at {self._where}: all {self.max_connections} connections"
                    f" stayed busy for {self._timeout:g} s"
                )
            self._pool.wait(remaining)
        self._busy += 1
        return self._idle.pop() if self._idle else None

    def _release(self, connection: _Connection[PeerT] | None, *, keep: bool) -> None:
        with self._pool:
            self._busy -= 1
            self._pool.notify()
            if keep and connection is not None and connection.epoch == self._epoch:
                self._idle.append(connection)
                return
        if connection is not None:
            connection.close()

    def _open(self, context: SSL.Context, epoch: int) -> _Connection[PeerT]:
        try:
            sock = socket.create_connection(self.address, timeout=self._timeout)
        except OSError as exc:  # refused, unreachable, timed out: the service is not there now
            raise TransportError(
                f"cannot connect to {self.service} at {self._where}: {exc}"
            ) from exc
        try:
            channel = handshake(
                sock,
                context,
                lambda der: self._verifier.verify(der, [self.service]),
                server=False,
                timeout=self._timeout,
                server_hostname=self.service,
            )
        except BaseException:
            sock.close()
            raise
        log.info("connected to %s at %s", channel.peer.describe(), self._where)
        return _Connection(channel, h11.Connection(h11.CLIENT), context, epoch)

    def _reusable(self, connection: _Connection[PeerT], context: SSL.Context) -> bool:
        """Whether an idle connection presents our current certificate, is still open, and
        its server still passes the peer check (evidence unexpired, manifest accepts)."""
        if context is not connection.opened_with or not connection.channel.idle_and_open():
            return False
        try:
            self._verifier.recheck(connection.channel.peer)
        except VerificationError as exc:
            log.info(
                "reconnecting to %s: an open connection no longer holds: %s", self.service, exc
            )
            return False
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PeerClient(MutualTlsClient[PeerIdentity]):
    """A service's client of a peer service: the server passes the RA-TLS check of
    ``peer_verify`` for the service this client means to call."""
