"""Web applications behind mutual RA-TLS: a WSGI (PEP 3333) or ASGI application as a service.

A service whose measured ``service.yaml`` says ``app: wsgi`` (or ``asgi``) has an entrypoint
that returns the application; the attested server answers every request of a verified peer
through it, with the peer in ``environ["teaclave_ma.peer"]`` (a ``PeerIdentity``, or an
``UnattestedPeer`` on an open edge). An ASGI application runs through a2wsgi on an event
loop of its own, and finds the peer in ``scope["extensions"]["teaclave_ma.peer"]``.

Building the environ and checking the application's response head are pure
(``build_environ``, ``response_head``). The application is trusted code (it is measured), but
its mistakes must not stop the server: an exception, or an unusable status or header,
answers 500 with no details (logged here); a failure after the head is sent ends that
connection.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import a2wsgi
import h11

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.rpc.http import Exchange, Reply, Responder
from teaclave_ma.transport.tls import Peer, TransportError

log = logging.getLogger(__name__)
# What the application writes to wsgi.errors, on a logger of its own.
app_log = logging.getLogger(f"{__name__}.app")

PEER_KEY = "teaclave_ma.peer"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(r"([2-5][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
# PEP 3333: the server, not the application, decides how the connection is framed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_INTERNAL_ERROR = b"internal server error\n"


class InvalidResponse(InputError):
    """The application's status or headers cannot be sent."""


class ResponseAborted(TransportError):
    """The application failed after its response head was sent: the connection ends."""


class _ErrorStream(io.TextIOBase):
    """``wsgi.errors``: what the application writes goes to logging, line by line."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                app_log.error("%s", line)
        return len(text)


def build_environ(
    exchange: Exchange[Peer], errors: io.TextIOBase, *, multiprocess: bool = False
) -> dict[str, Any]:
    """The PEP 3333 environ of one request. Header names with an underscore are dropped:
    as HTTP_* they would be indistinguishable from the dashed header (``X-User`` and
    ``X_User``), a way to smuggle a header past a proxy's checks."""
    request = exchange.request
    target = request.target.decode("latin-1")
    if not target.startswith("/"):
        raise InputError("request target", f"expected a path starting with '/', got {target!r}")
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": exchange.local[0],
        "SERVER_PORT": str(exchange.local[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('latin-1')}",
        "REMOTE_ADDR": exchange.remote[0],
        "REMOTE_PORT": str(exchange.remote[1]),
        # The body was read whole within the limit, so its length is known even if it
        # came chunked (a2wsgi reads CONTENT_LENGTH bytes, no more).
        "CONTENT_LENGTH": str(len(exchange.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(exchange.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": errors,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        PEER_KEY: exchange.peer,
    }
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1")  # h11 gives names lower-cased
        if "_" in name or name == "content-length":
            continue
        key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def response_head(status: object, headers: object) -> h11.Response:
    """The response head from ``start_response``'s arguments, or ``InvalidResponse``
    naming what is wrong."""
    if not isinstance(status, str) or not (match := _STATUS.fullmatch(status)):
        raise InvalidResponse("status", f"expected 'NNN reason' with NNN 200-599, got {status!r}")
    if not isinstance(headers, list):
        raise InvalidResponse("headers", f"expected a list, got {type(headers).__name__}")
    fields = []
    for index, header in enumerate(headers):
        where = f"headers[{index}]"
        if not (isinstance(header, tuple) and len(header) == 2):
            raise InvalidResponse(where, f"expected a (name, value) tuple, got {header!r}")
        name, value = header
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidResponse(where, f"invalid header name {name!r}")
        if name.lower() in _HOP_BY_HOP:
            raise InvalidResponse(where, f"{name} is the server's to send (hop-by-hop)")
        if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
            raise InvalidResponse(where, f"invalid value for {name}: {value!r}")
        try:
            fields.append((name.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:
            raise InvalidResponse(where, f"{name} is not latin-1: {value!r}") from None
    try:
        return h11.Response(
            status_code=int(match[1]), reason=match[2].encode("latin-1"), headers=fields
        )
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        raise InvalidResponse("headers", str(exc)) from None


class _StartResponse:
    """``start_response`` and ``write`` of one request."""

    def __init__(self) -> None:
        self.status: object = None
        self.headers: object = None
        self.sent = False  # the head has left (the first body bytes were produced)
        self.written: list[bytes] = []

    def __call__(
        self, status: object, headers: object, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise InvalidResponse("start_response", "called twice without exc_info")
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def head(self) -> h11.Response:
        if self.status is None:
            raise InvalidResponse("start_response", "the application never called it")
        return response_head(self.status, self.headers)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("the application's close() failed")


def _plain(status: int, body: bytes, *, close: bool = False) -> Reply:
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", b"%d" % len(body)),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    return Reply(h11.Response(status_code=status, headers=headers), [body])


class WsgiResponder(Responder[Peer]):
    """Answers each request through a WSGI application."""

    def __init__(self, name: str, app: WsgiApp, *, on_close: Callable[[], None] | None = None):
        self.name = name
        # Set when several processes serve this application (``serve --workers``): what
        # PEP 3333's wsgi.multiprocess tells the application.
        self.multiprocess = False
        self._app = app
        self._errors = _ErrorStream()
        self._on_close = on_close

    @classmethod
    def for_app(
        cls, kind: str, app: object, name: str, *, background_seconds: float
    ) -> WsgiResponder:
        """The responder for what the entrypoint returned, which service.yaml declared as
        ``app: kind`` (wsgi or asgi); ``ConfigError`` when the object is not that. An ASGI
        application's work after its response (background tasks) is cancelled after
        ``background_seconds``, so that a task that never ends cannot hold a connection."""
        if not callable(app):
            raise ConfigError(
                "app",
                f"{name}'s entrypoint returned {type(app).__name__}, not a {kind} application",
            )
        asynchronous = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(app.__call__)
        if kind == "wsgi" and asynchronous:
            raise ConfigError(
                "app",
                f"{name}'s entrypoint returned an ASGI application (async); service.yaml says app: wsgi",
            )
        if kind == "asgi":
            if not asynchronous:
                raise ConfigError(
                    "app",
                    f"{name}'s entrypoint returned {type(app).__name__}, not an ASGI application (async); service.yaml says app: asgi",
                )
            return _asgi(name, app, background_seconds)
        return cls(name, cast(WsgiApp, app))

    def refusal(self, status: int, message: str) -> Reply:
        return _plain(status, f"{message}\n".encode(), close=True)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    def respond(self, exchange: Exchange[Peer]) -> Reply:
        try:
            environ = build_environ(exchange, self._errors, multiprocess=self.multiprocess)
        except InputError as exc:
            return self.refusal(400, str(exc))
        start = _StartResponse()
        try:
            result = self._app(environ, start)
        except Exception:
            log.exception(
                "%s: the application failed (caller %s)", self.name, exchange.peer.describe()
            )
            return _plain(500, _INTERNAL_ERROR)
        chunks = iter(result)
        try:
            first = _first_chunk(chunks)
            head = start.head()
        except InvalidResponse as exc:
            log.error("%s: the application's response cannot be sent: %s", self.name, exc)
            _close(result)
            return _plain(500, _INTERNAL_ERROR)
        except Exception:
            log.exception(
                "%s: the application failed (caller %s)", self.name, exchange.peer.describe()
            )
            _close(result)
            return _plain(500, _INTERNAL_ERROR)
        start.sent = True
        return Reply(head, self._body(start, first, chunks), lambda: _close(result))

    def _body(
        self, start: _StartResponse, first: bytes, chunks: Iterator[bytes]
    ) -> Iterator[bytes]:
        try:
            yield from _drain(start.written)
            yield first
            for chunk in chunks:
                yield from _drain(start.written)
                yield chunk
            yield from _drain(start.written)
        except Exception as exc:
            log.exception("%s: the application failed while sending its body", self.name)
            raise ResponseAborted(
                f"the application failed mid-response: {type(exc).__name__}"
            ) from None


def _first_chunk(chunks: Iterator[bytes]) -> bytes:
    """The first non-empty chunk (b"" if none): PEP 3333 lets the application call
    start_response as late as that."""
    for chunk in chunks:
        if chunk:
            return chunk
    return b""


def _drain(pending: list[bytes]) -> Iterator[bytes]:
    while pending:
        yield pending.pop(0)


class _PeerInScope:
    """Puts the peer of a2wsgi's environ (``scope["wsgi_environ"]``) where an ASGI application
    looks for extensions, and logs what the application raises."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        extensions = scope.get("extensions") or {}
        extensions[PEER_KEY] = scope["wsgi_environ"][PEER_KEY]
        scope["extensions"] = extensions
        try:
            await self._app(scope, receive, send)
        except Exception:
            # Logged here: a2wsgi drops an exception raised after the response was sent
            # (Starlette answers 500, then re-raises), and the operator must still see it.
            log.exception(
                "the ASGI application failed (caller %s)", extensions[PEER_KEY].describe()
            )
            raise


def _asgi(name: str, app: object, background_seconds: float) -> WsgiResponder:
    """An ASGI application on an event loop of its own, stopped with the server. a2wsgi runs
    no lifespan events: set up in the entrypoint, not in a startup hook."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"{name}-asgi", daemon=True)
    thread.start()

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    bridge = a2wsgi.ASGIMiddleware(
        cast(Any, _PeerInScope(app)), wait_time=background_seconds, loop=loop
    )
    return WsgiResponder(name, cast(WsgiApp, bridge), on_close=stop)
