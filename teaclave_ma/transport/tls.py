"""Mutual RA-TLS over pyOpenSSL: TLS 1.3 only, the peer's RA-TLS certificate verified inside
the handshake.

Why pyOpenSSL and not the stdlib ``ssl`` module: a server must accept an unknown self-signed
client certificate and decide about it during the handshake, which ``ssl`` cannot do, and
``ssl`` loads private keys only from files, while our RA-TLS keys never leave memory.

A server runs the whole peer check on the client's leaf certificate inside the handshake
(the verify callback); a refusal aborts it. A client takes note of the server's certificate
in the callback and checks it right after the handshake, before any application byte is
read or written: in TLS 1.3 the server receives the client's certificate only once the
client has finished, so this lets both ends verify at the same time instead of in turn (a
first contact, where both verify a new quote, waits for one check instead of two). A
client's refusal closes the connection unused. Either way, the certificate the connection
ended up with is compared with the one that was verified, and nothing is trusted if they
differ.

The check is pluggable (``PeerAuthenticator``): the services use the RA-TLS check of
``peer_verify`` (quote, binding, manifest); the benchmarks plug in an ordinary CA check to
compare the same server and client code on plain mutual TLS. OpenSSL's own chain
verification is never relied on, so a check must verify everything it accepts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import attrs
from OpenSSL import SSL, crypto

from teaclave_ma.attestation import single_flight
from teaclave_ma.errors import TeaclaveMAError, VerificationError
from teaclave_ma.transport.credentials import CredentialSource, TlsCredentials

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransportError(TeaclaveMAError):
    """The connection failed or was cut: not a statement about the peer's identity."""


class PeerRejected(VerificationError):
    """The peer's attestation did not satisfy us; ``reason`` is the underlying refusal."""

    def __init__(self, side: str, reason: Exception) -> None:
        self.reason = reason
        check = reason.check if isinstance(reason, VerificationError) else "peer_certificate"
        super().__init__(check, f"{side} refused: {reason}")


class RefusedByPeer(VerificationError):
    """The peer aborted the handshake: it did not accept our attestation."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "refused_by_peer", f"the peer refused our attestation during the handshake ({detail})"
        )


class Peer(Protocol):
    """What the transport needs of a verified peer: how to name it in the logs."""

    def describe(self) -> str: ...


PeerT = TypeVar("PeerT", bound=Peer)


class PeerAuthenticator(Protocol[PeerT]):
    """The peer check of a connection. ``verify`` runs inside the handshake on the peer's
    leaf certificate (DER) and returns the verified peer or raises; it must check the
    certificate completely (OpenSSL's chain verification is ignored). ``recheck`` runs
    before each request on an open connection and raises a ``VerificationError`` if the
    peer is no longer accepted."""

    def verify(self, certificate: bytes, services: Sequence[str]) -> PeerT: ...

    def recheck(self, peer: PeerT) -> None: ...


# Called with the peer's leaf certificate DER; returns the verified peer or raises.
PeerCheck = Callable[[bytes], PeerT]


@attrs.define
class _HandshakeState(Generic[PeerT]):
    check: PeerCheck[PeerT]
    deferred: bool  # a client's: check after the handshake (see the module's docstring)
    verified: PeerT | None = None
    verified_sha256: bytes = b""
    failure: Exception | None = None
    presented: bytes | None = None  # the leaf a deferred check is still to judge


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, preverify_ok: int
) -> bool:
    state = conn.get_app_data()
    if not isinstance(state, _HandshakeState):
        return False
    if depth != 0:
        # Trust comes from the peer check of the leaf alone (RA-TLS certificates are
        # self-signed), so whatever chain the peer sends carries no weight either way.
        return True
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
    sha256 = hashlib.sha256(der).digest()
    if state.verified is not None and sha256 == state.verified_sha256:
        # OpenSSL calls back for the leaf once per chain error it sees and once more at the
        # end; these very bytes passed the check a moment ago in this handshake.
        return True
    if state.deferred:
        if state.presented is not None and state.presented != der:
            return False  # one leaf per handshake; a second one is never judged
        state.presented = der
        return True
    try:
        state.verified = state.check(der)
    except Exception as exc:  # every refusal must abort the handshake, whatever its type
        state.failure = exc
        return False
    state.verified_sha256 = sha256
    return True


def make_context(
    current: TlsCredentials | None, *, server: bool, peer_certificate_required: bool = True
) -> SSL.Context:
    """A TLS 1.3-only context that presents ``current`` (nothing: a one-way client) and
    demands a peer certificate, or on a server open to unattested callers, asks for one."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    if current is not None:
        context.use_certificate(current.certificate)
        context.use_privatekey(current.private_key)
        context.check_privatekey()
    mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if peer_certificate_required else 0)
    context.set_verify(mode, _verify_callback)
    # No session resumption: every connection presents and verifies fresh evidence.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(SSL.OP_NO_TICKET)
    # Idle connections give their read and write buffers back (some 30 KB each): a
    # server holds a thousand of them waiting for the next request.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    return context


class ContextCache:
    """One context per certificate generation: rebuilt only when the credentials rotate.
    Without credentials (a client outside any enclave), one context presenting nothing."""

    def __init__(
        self,
        credentials: CredentialSource | None,
        *,
        server: bool,
        peer_certificate_required: bool = True,
    ) -> None:
        self._credentials = credentials
        self._server = server
        self._required = peer_certificate_required
        self._built_for: TlsCredentials | None = None
        self._context: SSL.Context | None = None

    def get(self) -> SSL.Context:
        current = self._credentials.current() if self._credentials is not None else None
        if current is not self._built_for or self._context is None:
            self._context = make_context(
                current, server=self._server, peer_certificate_required=self._required
            )
            self._built_for = current
        return self._context


def _io(
    conn: SSL.Connection, sock: socket.socket, deadline: float, operation: Callable[[], T]
) -> T:
    """Run a pyOpenSSL operation on a non-blocking socket until done or the deadline passes."""
    while True:
        try:
            return operation()
        except SSL.WantReadError:
            wait_read = True
        except SSL.WantWriteError:
            wait_read = False
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not _ready(sock, remaining, read=wait_read):
            raise TransportError("timed out")


def _ready(sock: socket.socket, timeout: float, *, read: bool) -> bool:
    """Wait until ``sock`` is readable (or writable), closed or in error.

    poll, not select: a server with a thousand connections has descriptors above select's
    limit of 1024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN if read else select.POLLOUT)
    return bool(poller.poll(math.ceil(timeout * 1000)))


@attrs.define
class SecureChannel(Generic[PeerT]):
    """An established mutual TLS connection with a verified peer."""

    conn: SSL.Connection
    sock: socket.socket
    peer: PeerT
    timeout: float
    # Nothing received yet: the peer may still be judging our certificate (see send).
    fresh: bool = attrs.field(default=True, init=False)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            if self.fresh:
                self._raise_pending_refusal()
            chunk = view
            try:
                sent = _io(self.conn, self.sock, deadline, functools.partial(self.conn.send, chunk))
            except SSL.Error as exc:
                raise _refusal_or_failure("send", exc) from exc
            except OSError as exc:
                raise TransportError(f"send failed: {exc}") from exc
            view = view[sent:]

    def recv(self, size: int = 65536, timeout: float | None = None) -> bytes:
        """Bytes from the peer; b"" when it closed the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            data = _io(self.conn, self.sock, deadline, lambda: self.conn.recv(size))
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] in (-1, 0):  # EOF without close_notify
                return b""
            raise TransportError(f"receive failed: {exc}") from exc
        except SSL.Error as exc:
            raise _refusal_or_failure("receive", exc) from exc
        self.fresh = False
        return data

    def _raise_pending_refusal(self) -> None:
        """Raise the peer's refusal if it has already arrived.

        In TLS 1.3 a client's handshake is over before the server has judged its
        certificate. A server that refuses it sends an alert and closes; a send that meets
        the closed connection fails with a bare broken pipe or reset, and OpenSSL reads
        nothing after a failed write, so the alert that explains it must be read first."""
        try:
            quiet = self._quiet()
        except SSL.Error as exc:
            raise _refusal_or_failure("send", exc) from exc
        except OSError as exc:
            raise TransportError(f"send failed: {exc}") from exc
        if not quiet:
            raise TransportError("the peer answered before our first request was sent")

    def idle_and_open(self) -> bool:
        """True if an idle connection is still usable: nothing but TLS housekeeping (such as
        TLS 1.3 session tickets) arrived, and the peer did not close it."""
        try:
            return self._quiet()
        except (SSL.Error, OSError):
            return False

    def _quiet(self) -> bool:
        """Whether nothing but TLS housekeeping has arrived, without waiting; False when
        application data has (the exchange is out of step). A closed or refused connection
        raises OpenSSL's or the socket's error."""
        if not _ready(self.sock, 0, read=True):
            return True
        try:
            self.conn.recv(1)
        except SSL.WantReadError:
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(SSL.Error, OSError):  # closing anyway; the peer may be gone
            self.conn.shutdown()
        self.sock.close()


def handshake(
    sock: socket.socket,
    context: SSL.Context,
    check: PeerCheck[PeerT],
    *,
    server: bool,
    timeout: float,
    server_hostname: str | None = None,
    unattested: Callable[[], PeerT] | None = None,
) -> SecureChannel[PeerT]:
    """Run the mutual handshake on a connected socket; only a verified peer comes back.

    ``unattested``: on a server whose context does not require a client certificate, the
    peer of a client that presented none (one that presented any must pass ``check``)."""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Handshake flights and HTTP messages go out in several small sends; with Nagle's
        # algorithm each waits for the peer's delayed ACK (tens of milliseconds).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = SSL.Connection(context, sock)
    state: _HandshakeState[PeerT] = _HandshakeState(check, deferred=not server)
    conn.set_app_data(state)
    if server:
        conn.set_accept_state()
    else:
        conn.set_connect_state()
        if server_hostname:
            conn.set_tlsext_host_name(server_hostname.encode())
    deadline = time.monotonic() + timeout
    side = "client certificate" if server else "server certificate"
    try:
        with single_flight.deadline(deadline):  # the peer check's waits end with the handshake
            _io(conn, sock, deadline, conn.do_handshake)
            if state.presented is not None:
                _deferred_check(state)
    except (SSL.SysCallError, SSL.ZeroReturnError) as exc:
        # The socket failed, or the peer closed it cleanly: nobody judged anybody.
        if state.failure is not None:
            raise PeerRejected(side, state.failure) from state.failure
        reason = (
            "the peer closed the connection"
            if isinstance(exc, SSL.ZeroReturnError)
            else _describe_ssl_error(exc)
        )
        raise TransportError(f"handshake failed: {reason}") from exc
    except SSL.Error as exc:
        if state.failure is not None:
            raise PeerRejected(side, state.failure) from state.failure
        raise _handshake_refusal(side, exc) from exc
    except TransportError:
        raise
    except OSError as exc:
        raise TransportError(f"handshake failed: {exc}") from exc
    if state.failure is not None:  # a client's deferred refusal (and never a fall-through)
        raise PeerRejected(side, state.failure) from state.failure
    if unattested is not None and conn.get_peer_certificate() is None and state.verified is None:
        peer = unattested()
    else:
        peer = _confirm_same_certificate(conn, state, side)
    if conn.get_protocol_version_name() != "TLSv1.3":
        raise PeerRejected(side, TransportError(f"negotiated {conn.get_protocol_version_name()}"))
    return SecureChannel(conn=conn, sock=sock, peer=peer, timeout=timeout)


def _deferred_check(state: _HandshakeState[PeerT]) -> None:
    """A client's check of the server's leaf, run once the handshake is over; a refusal is
    recorded as inside the handshake, so the connection is never used."""
    assert state.presented is not None
    try:
        state.verified = state.check(state.presented)
    except Exception as exc:  # every refusal must end the connection, whatever its type
        state.failure = exc
        return
    state.verified_sha256 = hashlib.sha256(state.presented).digest()


def _confirm_same_certificate(
    conn: SSL.Connection, state: _HandshakeState[PeerT], side: str
) -> PeerT:
    """The verified peer, if the certificate the connection ended up with is the one verified."""
    presented = conn.get_peer_certificate()
    if presented is None or state.verified is None:
        raise PeerRejected(side, TransportError("no verified peer certificate"))
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, presented)
    if hashlib.sha256(der).digest() != state.verified_sha256:
        raise PeerRejected(side, TransportError("peer certificate changed after verification"))
    return state.verified


# OpenSSL's reasons for refusing a handshake itself, by the check they stand for; any other
# local failure is "tls_handshake".
_LOCAL_REFUSALS = (
    ("peer did not return a certificate", "no_peer_certificate"),
    ("unsupported protocol", "tls_version"),
    ("wrong version number", "tls_version"),
)


def _handshake_refusal(side: str, exc: SSL.Error) -> VerificationError:
    """An alert the peer sent is its refusal of us; anything else is OpenSSL, on our side,
    refusing what the peer sent (no certificate, an older TLS version, broken records)."""
    detail = _describe_ssl_error(exc)
    if _is_alert(detail):
        return RefusedByPeer(detail)
    check = next((check for reason, check in _LOCAL_REFUSALS if reason in detail), "tls_handshake")
    return PeerRejected(side, VerificationError(check, detail))


def _is_alert(detail: str) -> bool:
    # OpenSSL names a received alert "sslv3 alert ..." / "tlsv1 alert ..." / "tlsv13 alert ...".
    return " alert " in detail


def _refusal_or_failure(operation: str, exc: SSL.Error) -> TeaclaveMAError:
    # In TLS 1.3 the server checks the client's certificate after the client has finished
    # its side of the handshake, so a refusal reaches the client as an alert on first use.
    detail = _describe_ssl_error(exc)
    if _is_alert(detail):
        return RefusedByPeer(detail)
    return TransportError(f"{operation} failed: {detail}")


def _describe_ssl_error(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return ", ".join(parts) or str(exc) or type(exc).__name__
