"""Mutual RA-TLS over pyOpenSSL: TLS 1.3 only, the peer's RA-TLS certificate verified inside
the handshake.

Why pyOpenSSL and not the stdlib ``ssl`` module: a server must accept an unknown self-signed
client certificate and decide about it during the handshake, which ``ssl`` cannot do, and
``ssl`` loads private keys only from files, while our RA-TLS keys never leave memory.

The verify callback runs the full peer verification (quote, binding, manifest) on the leaf
certificate; a refusal aborts the handshake, so no application byte is read or written on
an unverified connection. After the handshake the certificate the connection ended up with
is compared with the one that was verified, and nothing is trusted if they differ.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import attrs
from OpenSSL import SSL, crypto

from teaclave_ma.errors import TeaclaveMAError, VerificationError
from teaclave_ma.transport.credentials import CredentialSource, RaTlsCredentials

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


# Called with the peer's leaf certificate DER; returns the verified peer or raises.
PeerCheck = Callable[[bytes], object]


@attrs.define
class _HandshakeState:
    check: PeerCheck
    verified: object = None
    verified_sha256: bytes = b""
    failure: Exception | None = None


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, preverify_ok: int
) -> bool:
    state = conn.get_app_data()
    if not isinstance(state, _HandshakeState):
        return False
    if depth != 0:
        # RA-TLS certificates are self-signed: trust comes from the quote in the leaf,
        # never from a chain, so intermediate certificates carry no weight either way.
        return True
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
    try:
        state.verified = state.check(der)
    except Exception as exc:  # every refusal must abort the handshake, whatever its type
        state.failure = exc
        return False
    state.verified_sha256 = hashlib.sha256(der).digest()
    return True


def make_context(current: RaTlsCredentials, *, server: bool) -> SSL.Context:
    """A TLS 1.3-only context that presents ``current`` and demands a peer certificate."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.use_certificate(current.certificate)
    context.use_privatekey(current.private_key)
    context.check_privatekey()
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    # No session resumption: every connection presents and verifies fresh evidence.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(SSL.OP_NO_TICKET)
    return context


class ContextCache:
    """One context per certificate generation: rebuilt only when the credentials rotate."""

    def __init__(self, credentials: CredentialSource, *, server: bool) -> None:
        self._credentials = credentials
        self._server = server
        self._built_for: RaTlsCredentials | None = None
        self._context: SSL.Context | None = None

    def get(self) -> SSL.Context:
        current = self._credentials.current()
        if current is not self._built_for or self._context is None:
            self._context = make_context(current, server=self._server)
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
        if remaining <= 0:
            raise TransportError("timed out")
        readable, writable, _ = select.select(
            [sock] if wait_read else [], [] if wait_read else [sock], [], remaining
        )
        if not readable and not writable:
            raise TransportError("timed out")


@attrs.define
class SecureChannel:
    """An established, mutually attested TLS connection."""

    conn: SSL.Connection
    sock: socket.socket
    peer: object
    timeout: float

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
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
            return _io(self.conn, self.sock, deadline, lambda: self.conn.recv(size))
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] in (-1, 0):  # EOF without close_notify
                return b""
            raise TransportError(f"receive failed: {exc}") from exc
        except SSL.Error as exc:
            raise _refusal_or_failure("receive", exc) from exc

    def idle_and_open(self) -> bool:
        """True if an idle connection is still usable: nothing but TLS housekeeping (such as
        TLS 1.3 session tickets) arrived, and the peer did not close it."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return True
        try:
            self.conn.recv(1)
        except SSL.WantReadError:
            return True
        except (SSL.Error, OSError):
            return False
        return False  # unsolicited application data: the exchange is out of step

    def close(self) -> None:
        with contextlib.suppress(SSL.Error, OSError):  # closing anyway; the peer may be gone
            self.conn.shutdown()
        self.sock.close()


def handshake(
    sock: socket.socket,
    context: SSL.Context,
    check: PeerCheck,
    *,
    server: bool,
    timeout: float,
    server_hostname: str | None = None,
) -> SecureChannel:
    """Run the mutual handshake on a connected socket; only a verified peer comes back."""
    sock.setblocking(False)
    conn = SSL.Connection(context, sock)
    state = _HandshakeState(check)
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
        _io(conn, sock, deadline, conn.do_handshake)
    except SSL.Error as exc:
        if state.failure is not None:
            raise PeerRejected(side, state.failure) from state.failure
        raise RefusedByPeer(_describe_ssl_error(exc)) from exc
    except TransportError:
        raise
    except OSError as exc:
        raise TransportError(f"handshake failed: {exc}") from exc
    if state.failure is not None:  # defensive: a failure must never fall through
        raise PeerRejected(side, state.failure)
    _confirm_same_certificate(conn, state, side)
    if conn.get_protocol_version_name() != "TLSv1.3":
        raise PeerRejected(side, TransportError(f"negotiated {conn.get_protocol_version_name()}"))
    return SecureChannel(conn=conn, sock=sock, peer=state.verified, timeout=timeout)


def _confirm_same_certificate(conn: SSL.Connection, state: _HandshakeState, side: str) -> None:
    presented = conn.get_peer_certificate()
    if presented is None or state.verified is None:
        raise PeerRejected(side, TransportError("no verified peer certificate"))
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, presented)
    if hashlib.sha256(der).digest() != state.verified_sha256:
        raise PeerRejected(side, TransportError("peer certificate changed after verification"))


def _refusal_or_failure(operation: str, exc: SSL.Error) -> TeaclaveMAError:
    # In TLS 1.3 the server checks the client's certificate after the client has finished
    # its side of the handshake, so a refusal reaches the client as an alert on first use.
    detail = _describe_ssl_error(exc)
    if "alert" in detail:
        return RefusedByPeer(detail)
    return TransportError(f"{operation} failed: {detail}")


def _describe_ssl_error(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return ", ".join(parts) or str(exc) or type(exc).__name__
