"""HTTP/1.1 framing with h11 over an attested channel, with bounds on size and time."""

from __future__ import annotations

import time

import h11

from teaclave_ma.transport.tls import PeerT, SecureChannel, TransportError

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
