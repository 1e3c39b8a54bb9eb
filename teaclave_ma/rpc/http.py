"""HTTP/1.1 framing with h11 over an attested channel, with bounds on size and time.

What answers a request on the server is a ``Responder``: it gets the whole request (its body
already read within the limit) and the verified peer, and gives back a ``Reply`` whose body
may be streamed. JSON-RPC (``rpc.server``) and WSGI applications (``rpc.wsgi``) are two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import attrs
import h11

from teaclave_ma.transport.tls import Peer, PeerT, SecureChannel, TransportError

# A responder for any peer serves a server of attested peers only.
PeerT_contra = TypeVar("PeerT_contra", bound=Peer, contravariant=True)

RPC_PATH = b"/rpc"
JSON = b"application/json"


class HttpLimitError(TransportError):
    """The peer broke a bound (size or time); the connection is dropped."""


def _next_event(
    channel: SecureChannel[PeerT], http: h11.Connection, deadline: float
) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpLimitError("timed out waiting for the peer")
        http.receive_data(channel.recv(65536, timeout=remaining))


def read_message(
    channel: SecureChannel[PeerT], http: h11.Connection, *, max_body: int, timeout: float
) -> tuple[h11.Request | h11.Response, bytes] | None:
    """One request (server) or response (client) with its body; None when the peer closed."""
    deadline = time.monotonic() + timeout
    head = _next_event(channel, http, deadline)
    if isinstance(head, h11.ConnectionClosed):
        return None
    if not isinstance(head, h11.Request | h11.Response):
        raise TransportError(f"unexpected HTTP event {type(head).__name__}")
    for name, value in head.headers:
        if name == b"content-length" and int(value) > max_body:
            raise HttpLimitError(f"body of {int(value)} bytes exceeds the limit of {max_body}")
    body = bytearray()
    while True:
        event = _next_event(channel, http, deadline)
        if isinstance(event, h11.Data):
            body.extend(event.data)
            if len(body) > max_body:
                raise HttpLimitError(f"body exceeds the limit of {max_body} bytes")
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        else:
            raise TransportError(f"unexpected HTTP event {type(event).__name__}")


@attrs.frozen
class Exchange(Generic[PeerT]):
    """One request as a responder sees it: ``local`` is the server's address, ``remote``
    the client's."""

    request: h11.Request
    body: bytes
    peer: PeerT
    local: tuple[str, int]
    remote: tuple[str, int]


def _nothing() -> None:
    pass


@attrs.frozen
class Reply:
    """A response head and its body; ``close`` is called once the body is sent or abandoned."""

    head: h11.Response
    body: Iterable[bytes]
    close: Callable[[], None] = _nothing


class Responder(Generic[PeerT_contra]):
    """What the server serves: it answers each request of a verified peer."""

    name: str

    def respond(self, exchange: Exchange[PeerT_contra]) -> Reply:
        raise NotImplementedError

    def refusal(self, status: int, message: str) -> Reply:
        """The answer to a request the server will not pass on (too large, malformed, or
        from a peer no longer accepted); the connection closes after it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the responder holds (the server has stopped)."""


def send_reply(
    channel: SecureChannel[PeerT], http: h11.Connection, reply: Reply, *, head_only: bool = False
) -> None:
    """Send the head, then the body chunk by chunk (none at all for a HEAD request, whose
    response has no body), then the end; ``reply.close`` is called whatever happens."""
    try:
        data = http.send(reply.head) or b""
        for chunk in reply.body:
            if chunk and not head_only:
                channel.send(data + (http.send(h11.Data(data=chunk)) or b""))
                data = b""
        channel.send(data + (http.send(h11.EndOfMessage()) or b""))
    finally:
        reply.close()


def send_message(
    channel: SecureChannel[PeerT], http: h11.Connection, head: h11.Event, body: bytes
) -> None:
    data = http.send(head) or b""
    if body:
        data += http.send(h11.Data(data=body)) or b""
    data += http.send(h11.EndOfMessage()) or b""
    channel.send(data)


def rpc_request(host: str, body: bytes) -> h11.Request:
    headers = [
        (b"Host", host.encode()),
        (b"Content-Type", JSON),
        (b"Content-Length", str(len(body)).encode()),
    ]
    return h11.Request(method=b"POST", target=RPC_PATH, headers=headers)


def rpc_response(status: int, body: bytes, *, close: bool = False) -> h11.Response:
    headers = [(b"Content-Type", JSON), (b"Content-Length", str(len(body)).encode())]
    if close:
        headers.append((b"Connection", b"close"))
    return h11.Response(status_code=status, headers=headers)
