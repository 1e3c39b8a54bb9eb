"""Calling a peer service by name over mutual RA-TLS.

The client connects, verifies that the server is an enclave the manifest accepts for the
service it meant to call, and only then sends a request. One connection is kept alive
and reused; before each request it is replaced by a new one if the server closed it,
our own certificate rotated, or the server no longer passes the peer check (its
certificate or collateral expired, the manifest dropped it). Nothing is ever resent after
a request was sent (a call is not retried, since it may not be idempotent).
A connection that fails, is cut or is refused is dropped (the call raises a
``TransportError``, or ``RefusedByPeer``), and the next call connects and verifies the
server afresh.

``MutualTlsClient`` takes its peer check as a parameter; ``PeerClient`` is it with the RA-TLS
check that services use. The benchmarks run the same code with a plain CA check.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from typing import Any, Generic, Self

import h11
from OpenSSL import SSL

from teaclave_ma.errors import VerificationError
from teaclave_ma.rpc.http import read_message, rpc_request, send_message
from teaclave_ma.rpc.jsonrpc import decode_response, encode_request
from teaclave_ma.transport.credentials import CredentialSource
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import (
    ContextCache,
    PeerAuthenticator,
    PeerT,
    RefusedByPeer,
    SecureChannel,
    TransportError,
    handshake,
)

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 << 20


class MutualTlsClient(Generic[PeerT]):
    def __init__(
        self,
        service: str,
        address: tuple[str, int],
        credentials: CredentialSource,
        verifier: PeerAuthenticator[PeerT],
        *,
        timeout: float = 30.0,
    ) -> None:
        self.service = service
        self.address = address
        self._contexts = ContextCache(credentials, server=False)
        self._verifier = verifier
        self._timeout = timeout
        self._lock = threading.Lock()
        self._channel: SecureChannel[PeerT] | None = None
        self._http: h11.Connection | None = None
        self._opened_with: SSL.Context | None = None  # the context of self._channel
        self._ids = itertools.count(1)

    @property
    def peer(self) -> PeerT | None:
        """The verified server of the current connection, if connected."""
        return self._channel.peer if self._channel is not None else None

    def connect(self) -> PeerT:
        """Connect and verify now (calls do this on demand)."""
        with self._lock:
            channel, _ = self._connection()
            return channel.peer

    def call(self, method: str, **params: Any) -> Any:
        with self._lock:
            channel, http = self._connection()
            request_id = next(self._ids)
            body = encode_request(request_id, method, params)
            where = f"{self.address[0]}:{self.address[1]}"
            try:
                try:
                    send_message(channel, http, rpc_request(where, body), body)
                    message = read_message(
                        channel, http, max_body=MAX_RESPONSE_BYTES, timeout=self._timeout
                    )
                except TransportError as exc:  # a bare "timed out" must say whom and what
                    raise type(exc)(f"{self.service} at {where}, calling {method}: {exc}") from exc
                if message is None:
                    raise TransportError(
                        f"{self.service} closed the connection before answering {method}"
                    )
                response, answer = message
                if not isinstance(response, h11.Response) or response.status_code != 200:
                    status = getattr(response, "status_code", "?")
                    raise TransportError(
                        f"{self.service} answered HTTP {status} to {method}: {answer[:200]!r}"
                    )
                if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
                    self._drop()
                else:
                    http.start_next_cycle()
            except (TransportError, RefusedByPeer):
                self._drop()
                raise
            except h11.ProtocolError as exc:
                self._drop()
                raise TransportError(
                    f"{self.service} broke HTTP/1.1 framing during {method}: {exc}"
                ) from exc
            return decode_response(answer, request_id)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connection(self) -> tuple[SecureChannel[PeerT], h11.Connection]:
        """The open connection if it may still carry a request, else a new, verified one.

        Nothing has been sent yet, so replacing a stale connection here is always safe."""
        context = self._contexts.get()  # rotates our certificate when it nears expiry
        if self._channel is not None and self._http is not None and self._reusable(context):
            return self._channel, self._http
        self._drop()
        try:
            sock = socket.create_connection(self.address, timeout=self._timeout)
        except OSError as exc:  # refused, unreachable, timed out: the service is not there now
            raise TransportError(
                f"cannot connect to {self.service} at {self.address[0]}:{self.address[1]}: {exc}"
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
        log.info("connected to %s at %s:%d", channel.peer.describe(), *self.address)
        self._channel, self._http = channel, h11.Connection(h11.CLIENT)
        self._opened_with = context
        return self._channel, self._http

    def _reusable(self, context: SSL.Context) -> bool:
        """Whether the open connection presents our current certificate, is idle and open,
        and its server still passes the peer check (evidence unexpired, manifest accepts)."""
        channel = self._channel
        if channel is None or context is not self._opened_with or not channel.idle_and_open():
            return False
        try:
            self._verifier.recheck(channel.peer)
        except VerificationError as exc:
            log.info(
                "reconnecting to %s: the open connection no longer holds: %s", self.service, exc
            )
            return False
        return True

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._http = None
        self._opened_with = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PeerClient(MutualTlsClient[PeerIdentity]):
    """A service's client of a peer service: the server passes the RA-TLS check of
    ``peer_verify`` for the service this client means to call."""
