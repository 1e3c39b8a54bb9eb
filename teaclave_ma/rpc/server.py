"""The attested RPC server: accepts TCP, runs the mutual RA-TLS handshake, then serves JSON-RPC.

Bounds keep one slow or hostile peer from stalling the rest: a limit on concurrent
connections, a smaller one on connections still in their handshake, a deadline on each
handshake, an idle deadline between requests, and a maximum request size.

Admission is fair to attested peers. A handshake costs a stranger nothing (a silent TCP
connection holds a slot until the deadline), so slots in the handshake are shared out by
source (an IPv4 address, or an IPv6 /64): one source holds at most
``max_handshakes_per_source`` (its next connection is closed at once), and when all
``max_handshakes`` are taken, a new connection evicts the oldest handshake of the source
that holds the most. A flood from one source thus holds its share and no more; a flood
from many sources evicts itself, since each of its sources holds at least as many slots
as a legitimate peer, whose handshake is over within milliseconds. Established
connections are never evicted: they are attested.

``MutualTlsServer`` takes its peer check as a parameter; ``RpcServer`` is it with the RA-TLS
check that services use. The benchmarks run the same code with a plain CA check. What
answers requests is a ``Responder`` (``rpc.http``): JSON-RPC for a ``Service``
(``RpcResponder``), or a web application (``rpc.wsgi``).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol

import attrs
import h11

from teaclave_ma.errors import TeaclaveMAError, VerificationError
from teaclave_ma.formats.limits import ServerLimits
from teaclave_ma.observability.events import NO_OBSERVER, Observer
from teaclave_ma.rpc.http import (
    RPC_PATH,
    Exchange,
    HttpLimitError,
    PeerT_contra,
    Reply,
    Responder,
    read_message,
    rpc_response,
    send_reply,
)
from teaclave_ma.rpc.jsonrpc import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_ALLOWED,
    RpcError,
    decode_request,
    encode_error,
    encode_result,
)
from teaclave_ma.transport.credentials import CredentialSource
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import (
    ContextCache,
    PeerAuthenticator,
    PeerRejected,
    PeerT,
    SecureChannel,
    handshake,
)

log = logging.getLogger(__name__)


def source_of(address: tuple[Any, ...]) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 /64 (a host is
    often given a whole /64, so single IPv6 addresses cost it nothing)."""
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@attrs.define(eq=False)  # compared by identity: one per connection
class _Handshake:
    sock: socket.socket
    source: str


class _Admission:
    """The server's slots: connections, and handshakes in progress by source (oldest first).

    One lock guards it all; a socket is shut down (to evict its handshake) only under it,
    and only while its handshake still holds a slot, which is before its thread closes it."""

    def __init__(self, limits: ServerLimits, name: str) -> None:
        self._limits = limits
        self._name = name
        self._lock = threading.Lock()
        self._connections = 0
        self._handshakes: dict[_Handshake, None] = {}  # insertion order: the oldest first
        self._per_source: collections.Counter[str] = collections.Counter()
        self.refused = 0  # connections closed at once, for operators and tests
        self.evicted = 0  # handshakes ended to make room

    def admit(self, sock: socket.socket, address: tuple[Any, ...]) -> _Handshake | None:
        """A connection and handshake slot for a new connection, or None (refused, logged)."""
        source = source_of(address)
        with self._lock:
            refusal = self._refusal(source)
            if refusal is not None:
                self.refused += 1
                log.info("%s: %s; closing %s:%d", self._name, refusal, *address[:2])
                return None
            if len(self._handshakes) >= self._limits.max_handshakes:
                self._evict_one()
            ticket = _Handshake(sock, source)
            self._handshakes[ticket] = None
            self._per_source[source] += 1
            self._connections += 1
            return ticket

    def _refusal(self, source: str) -> str | None:
        if self._connections >= self._limits.max_connections:
            return f"connection limit {self._limits.max_connections} reached"
        if self._per_source[source] >= self._limits.max_handshakes_per_source:
            return (
                f"{source} already has {self._per_source[source]} handshakes in progress "
                f"(the limit per source)"
            )
        return None

    def _evict_one(self) -> None:
        """End the oldest handshake of the source holding the most (the lock is held)."""
        most = max(self._per_source.values())
        victim = next(h for h in self._handshakes if self._per_source[h.source] == most)
        self._forget(victim)
        self.evicted += 1
        log.info(
            "%s: handshake limit %d reached; ending the oldest handshake from %s (%d in progress)",
            self._name,
            self._limits.max_handshakes,
            victim.source,
            most,
        )
        # Its thread sees the connection end, fails its handshake and closes the socket.
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)

    def _forget(self, ticket: _Handshake) -> None:
        del self._handshakes[ticket]
        self._per_source[ticket.source] -= 1
        if not self._per_source[ticket.source]:
            del self._per_source[ticket.source]

    def handshake_over(self, ticket: _Handshake) -> bool:
        """Give the handshake slot back; False if it was taken away (the handshake evicted)."""
        with self._lock:
            if ticket not in self._handshakes:
                return False
            self._forget(ticket)
            return True

    def connection_closed(self) -> None:
        with self._lock:
            self._connections -= 1

    def give_back(self, ticket: _Handshake) -> None:
        """Both slots of a connection that was never served."""
        self.handshake_over(ticket)
        self.connection_closed()


# How long a refused client is given to read our alert before the socket is closed.
REFUSAL_LINGER = 1.0


def _close_after_refusal(sock: socket.socket) -> None:
    """Close a connection whose handshake we refused so that the client learns why.

    The refusal happens while the client's last handshake records (and perhaps its first
    request) are still unread; closing then resets the connection, and a reset can reach
    the client before our alert does, leaving it a bare "connection reset". So: end our
    side after the alert, discard what the client still sends until it closes (briefly)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + REFUSAL_LINGER
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)  # the whole linger, not a fresh second per read
            if not sock.recv(4096):
                break
    sock.close()


class Dispatcher(Protocol[PeerT_contra]):
    """What the server serves (``rpc.service.Service``): handlers called with the verified peer."""

    @property
    def name(self) -> str: ...

    def dispatch(self, peer: PeerT_contra, method: str, params: dict[str, Any]) -> Any: ...


class RpcResponder(Responder[PeerT]):
    """JSON-RPC 2.0 on ``POST /rpc``, answered by a ``Dispatcher``."""

    def __init__(self, service: Dispatcher[PeerT], observer: Observer = NO_OBSERVER) -> None:
        self.name = service.name
        self._service = service
        self._observer = observer

    def respond(self, exchange: Exchange[PeerT]) -> Reply:
        status, answer = self._answer(exchange.request, exchange.body, exchange.peer)
        return Reply(rpc_response(status, answer), [answer])

    def refusal(self, status: int, message: str) -> Reply:
        code = NOT_ALLOWED if status == 403 else INVALID_REQUEST
        answer = encode_error(None, RpcError(code, message))
        return Reply(rpc_response(status, answer, close=True), [answer])

    def _answer(self, request: h11.Request, body: bytes, peer: PeerT) -> tuple[int, bytes]:
        if request.method != b"POST" or request.target != RPC_PATH:
            error = RpcError(INVALID_REQUEST, "JSON-RPC is served by POST /rpc only")
            return 404, encode_error(None, error)
        request_id = None
        started = time.perf_counter()
        try:
            rpc = decode_request(body)
            request_id = rpc.id
            try:
                result = self._service.dispatch(peer, rpc.method, rpc.params)
            except RpcError as exc:
                # Only the service's own methods name a series: a peer's made-up names must
                # not grow the metrics without bound.
                if exc.code != METHOD_NOT_FOUND:
                    self._observer.rpc_served(rpc.method, time.perf_counter() - started)
                raise
            self._observer.rpc_served(rpc.method, time.perf_counter() - started)
            answer = encode_result(request_id, result)
        except RpcError as exc:
            return 200, encode_error(request_id, exc)
        # A handler returned something JSON cannot carry (or nested too deep to encode).
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("%s: unserialisable result: %s", self.name, exc)
            return 200, encode_error(request_id, RpcError(-32603, "result could not be encoded"))
        return 200, answer


class MutualTlsServer(Generic[PeerT]):
    def __init__(
        self,
        service: Dispatcher[PeerT] | Responder[PeerT],
        credentials: CredentialSource,
        verifier: PeerAuthenticator[PeerT],
        *,
        inbound: Sequence[str],
        address: tuple[str, int],
        limits: ServerLimits | None = None,
        unattested: Callable[[], PeerT] | None = None,
        observer: Observer = NO_OBSERVER,
        reuse_port: bool = False,
    ) -> None:
        """``unattested``: the peer of a client without a certificate, on a service open to
        them (``rpc.outside``); without it, every client must present one. ``reuse_port``:
        several worker processes listen on the same port (SO_REUSEPORT), and the kernel
        spreads new connections over them. ``service``: a ``Responder``, or a
        ``Dispatcher`` (a JSON-RPC ``Service``) to answer through ``RpcResponder``."""
        self.service: Responder[PeerT] = (
            service if isinstance(service, Responder) else RpcResponder(service, observer)
        )
        self._unattested = unattested
        self._observer = observer
        self._contexts = ContextCache(
            credentials, server=True, peer_certificate_required=unattested is None
        )
        self._verifier = verifier
        self._inbound = tuple(inbound)
        self._limits = limits or ServerLimits()
        self.admission = _Admission(self._limits, self.service.name)
        self._stopping = threading.Event()
        self._listener = socket.create_server(address, backlog=128, reuse_port=reuse_port)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread: threading.Thread | None = None
        self.rejections = 0  # handshakes refused, for operators and tests

    def start(self) -> tuple[str, int]:
        self._contexts.get()  # fail now, not on the first caller, if credentials are unusable
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"{self.service.name}-accept", daemon=True
        )
        self._thread.start()
        log.info(
            "%s serving attested RPC on %s:%d (inbound: %s)",
            self.service.name,
            *self.address,
            ", ".join(self._inbound) or "none",
        )
        return self.address

    def stop(self) -> None:
        self._stopping.set()
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.service.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, peer_address = self._listener.accept()
            except OSError as exc:
                if self._stopping.is_set():
                    return
                # E.g. out of file descriptors: back off instead of spinning on accept().
                log.warning("%s: accept failed: %s", self.service.name, exc)
                self._stopping.wait(0.05)
                continue
            ticket = self.admission.admit(sock, peer_address)
            if ticket is None:
                sock.close()
                continue
            try:
                threading.Thread(
                    target=self._serve_connection, args=(ticket, peer_address), daemon=True
                ).start()
            except RuntimeError as exc:  # no thread to be had: refuse this one, keep accepting
                log.error("%s: cannot serve %s:%d: %s", self.service.name, *peer_address[:2], exc)
                self.admission.give_back(ticket)
                sock.close()

    def _serve_connection(self, ticket: _Handshake, peer_address: tuple[str, int]) -> None:
        where = f"{peer_address[0]}:{peer_address[1]}"
        try:
            channel = self._handshake_or_close(ticket, where)
            if channel is None:
                return
            peer = channel.peer
            log.info("%s accepted %s from %s", self.service.name, peer.describe(), where)
            try:
                self._serve_requests(channel, peer, peer_address)
            except TeaclaveMAError as exc:
                log.info("%s: connection from %s ended: %s", self.service.name, where, exc)
            except Exception:  # a bug: this connection ends, logged, and the server serves on
                log.exception(
                    "%s: connection from %s failed unexpectedly", self.service.name, where
                )
            finally:
                channel.close()
        finally:
            # On every path, or the server would fill up and refuse all.
            self.admission.connection_closed()

    def _handshake_or_close(self, ticket: _Handshake, where: str) -> SecureChannel[PeerT] | None:
        """The verified channel; or None, the socket closed and the reason logged. The
        handshake slot is given back before the socket is closed, however it ends."""
        sock = ticket.sock
        try:
            try:
                channel = handshake(
                    sock,
                    self._contexts.get(),
                    lambda der: self._verifier.verify(der, self._inbound),
                    server=True,
                    timeout=self._limits.handshake_timeout,
                    unattested=self._unattested,
                )
            finally:
                kept = self.admission.handshake_over(ticket)
        except PeerRejected as exc:
            self.rejections += 1
            self._observer.handshake_refused(exc.check)
            log.warning("%s refused client %s: %s", self.service.name, where, exc.reason)
            _close_after_refusal(sock)
        except TeaclaveMAError as exc:
            log.info("%s: handshake with %s failed: %s", self.service.name, where, exc)
            sock.close()
        except Exception:  # a bug or an exhausted resource; the connection must still end
            log.exception("%s: handshake with %s failed unexpectedly", self.service.name, where)
            sock.close()
        else:
            if kept:
                self._observer.handshake_accepted()
                return channel
            # Evicted as it ended: its socket is shut down, nothing can be served on it.
            channel.close()
        return None

    def _serve_requests(
        self, channel: SecureChannel[PeerT], peer: PeerT, remote: tuple[str, int]
    ) -> None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        while not self._stopping.is_set():
            try:
                message = read_message(
                    channel,
                    http,
                    max_body=self._limits.max_request_bytes,
                    timeout=self._limits.idle_timeout,
                )
            except (h11.RemoteProtocolError, HttpLimitError) as exc:
                status = 413 if isinstance(exc, HttpLimitError) else 400
                with contextlib.suppress(TeaclaveMAError, h11.LocalProtocolError):
                    send_reply(channel, http, self.service.refusal(status, str(exc)))
                log.info("%s: dropping %s: %s", self.service.name, peer.describe(), exc)
                return
            if message is None:
                return
            request, body = message
            assert isinstance(request, h11.Request)
            try:
                self._verifier.recheck(peer)
            except VerificationError as exc:
                self.rejections += 1
                self._observer.handshake_refused(exc.check)
                log.warning("%s: no longer serving %s: %s", self.service.name, peer.describe(), exc)
                refusal = self.service.refusal(403, f"attestation no longer accepted: {exc}")
                send_reply(channel, http, refusal)
                return
            exchange = Exchange(request, body, peer, self.address, (remote[0], remote[1]))
            reply = self.service.respond(exchange)
            send_reply(channel, http, reply, head_only=request.method == b"HEAD")
            if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
                return
            http.start_next_cycle()


class RpcServer(MutualTlsServer[PeerIdentity]):
    """The server of a service: every client passes the RA-TLS check of ``peer_verify``."""
