"""Calling a peer service by name over mutual RA-TLS.

The client connects, verifies that the server is an enclave the manifest accepts for the
service it meant to call, and only then sends a request. One connection is kept alive
and reused; an idle connection the server closed is replaced before the next request,
never after a request was sent (a call is not retried, since it may not be idempotent).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from typing import Any

import h11

from teaclave_ma.errors import VerificationError
from teaclave_ma.rpc.http import read_message, rpc_request, send_message
from teaclave_ma.rpc.jsonrpc import decode_response, encode_request
from teaclave_ma.transport.credentials import CredentialSource
from teaclave_ma.transport.peer_verify import PeerIdentity, PeerVerifier
from teaclave_ma.transport.tls import (
    ContextCache,
    PeerRejected,
    SecureChannel,
    TransportError,
    handshake,
)

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 << 20


class PeerClient:
    def __init__(
        self,
        service: str,
        address: tuple[str, int],
        credentials: CredentialSource,
        verifier: PeerVerifier,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.service = service
        self.address = address
        self._contexts = ContextCache(credentials, server=False)
        self._verifier = verifier
        self._timeout = timeout
        self._lock = threading.Lock()
        self._channel: SecureChannel | None = None
        self._http: h11.Connection | None = None
        self._ids = itertools.count(1)

    @property
    def peer(self) -> PeerIdentity | None:
        """The verified server of the current connection, if connected."""
        return self._channel.peer if self._channel is not None else None  # type: ignore[return-value]

    def connect(self) -> PeerIdentity:
        """Connect and verify now (calls do this on demand)."""
        with self._lock:
            channel, _ = self._connection()
            assert isinstance(channel.peer, PeerIdentity)
            return channel.peer

    def call(self, method: str, **params: Any) -> Any:
        with self._lock:
            channel, http = self._connection()
            try:
                self._verifier.recheck(channel.peer)  # type: ignore[arg-type]
            except VerificationError as exc:
                self._drop()
                raise PeerRejected("server certificate", exc) from exc
            request_id = next(self._ids)
            body = encode_request(request_id, method, params)
            try:
                send_message(
                    channel, http, rpc_request(f"{self.address[0]}:{self.address[1]}", body), body
                )
                message = read_message(
                    channel, http, max_body=MAX_RESPONSE_BYTES, timeout=self._timeout
                )
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
            except TransportError:
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

    def _connection(self) -> tuple[SecureChannel, h11.Connection]:
        if self._channel is not None and self._http is not None and self._channel.idle_and_open():
            return self._channel, self._http
        self._drop()
        sock = socket.create_connection(self.address, timeout=self._timeout)
        try:
            channel = handshake(
                sock,
                self._contexts.get(),
                lambda der: self._verifier.verify(der, [self.service]),
                server=False,
                timeout=self._timeout,
                server_hostname=self.service,
            )
        except BaseException:
            sock.close()
            raise
        log.info(
            "connected to %s at %s:%d",
            channel.peer.describe() if isinstance(channel.peer, PeerIdentity) else self.service,
            *self.address,
        )
        self._channel, self._http = channel, h11.Connection(h11.CLIENT)
        return self._channel, self._http

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._http = None

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
