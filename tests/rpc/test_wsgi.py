"""The WSGI bridge without a network: environ, response checks, failures, the app: setting."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h11
import pytest

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.rpc.http import Exchange
from teaclave_ma.rpc.outside import Caller
from teaclave_ma.rpc.service import Service
from teaclave_ma.rpc.wsgi import (
    PEER_KEY,
    InvalidResponse,
    ResponseAborted,
    WsgiResponder,
    build_environ,
    response_head,
)
from teaclave_ma.runtime.service_runtime import answering

YAML = b"name: web\nentrypoint: app:build\nenclave: {isv_prod_id: 3, isv_svn: 1}\n"


def exchange(
    peer: Caller,
    target: bytes = b"/",
    *,
    method: bytes = b"GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> Exchange[Caller]:
    request = h11.Request(
        method=method, target=target, headers=[(b"Host", b"web"), *(headers or [])]
    )
    return Exchange(request, body, peer, ("127.0.0.1", 7443), ("127.0.0.2", 50000))


def environ_of(ex: Exchange[Caller]) -> dict[str, Any]:
    return build_environ(ex, io.StringIO())  # type: ignore[arg-type]


def body_of(reply_body: Iterable[bytes]) -> bytes:
    return b"".join(reply_body)


def test_the_environ_carries_the_request_and_the_verified_peer(
    fake_peer: Callable[..., Caller],
) -> None:
    peer = fake_peer("frontend")
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"2"),
        (b"X-Trace", b"a"),
        (b"X-Trace", b"b"),
    ]
    environ = environ_of(
        exchange(
            peer, b"/caf%C3%A9/a%2Fb?q=%C3%A9&x=1", method=b"POST", headers=headers, body=b"{}"
        )
    )
    assert environ[PEER_KEY] is peer
    assert environ["REQUEST_METHOD"] == "POST"
    # Percent-decoded, then each byte one latin-1 character (PEP 3333's native strings).
    assert environ["PATH_INFO"] == "/caf\u00c3\u00a9/a/b"
    assert environ["QUERY_STRING"] == "q=%C3%A9&x=1"  # left as sent
    assert environ["SCRIPT_NAME"] == ""
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", "7443")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("127.0.0.2", "50000")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["wsgi.input"].read() == b"{}"
    assert environ["CONTENT_TYPE"] == "application/json" and environ["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_X_TRACE"] == "a,b" and environ["HTTP_HOST"] == "web"


def test_a_chunked_body_gets_its_real_length(fake_peer: Callable[..., Caller]) -> None:
    ex = exchange(
        fake_peer(),
        method=b"POST",
        headers=[(b"Transfer-Encoding", b"chunked")],
        body=b"hello",
    )
    assert environ_of(ex)["CONTENT_LENGTH"] == "5"


def test_an_underscored_header_cannot_pose_as_a_dashed_one(
    fake_peer: Callable[..., Caller],
) -> None:
    environ = environ_of(exchange(fake_peer(), headers=[(b"X_User", b"admin")]))
    assert "HTTP_X_USER" not in environ


def test_a_target_that_is_not_a_path_is_refused(fake_peer: Callable[..., Caller]) -> None:
    with pytest.raises(InputError, match=r"request target: expected a path starting with '/'"):
        environ_of(exchange(fake_peer(), b"http://elsewhere/"))


def test_a_valid_head_is_built() -> None:
    head = response_head("201 Created", [("Content-Type", "text/plain"), ("X-A", "b c")])
    assert head.status_code == 201 and head.reason == b"Created"
    assert (b"x-a", b"b c") in list(head.headers)


@pytest.mark.parametrize(
    ("status", "headers", "field", "problem"),
    [
        ("OK", [], "status", "expected 'NNN reason'"),
        ("99 Odd", [], "status", "expected 'NNN reason'"),
        ("101 Switching Protocols", [], "status", "expected 'NNN reason'"),
        (200, [], "status", "got 200"),
        ("200 OK\r\nX: y", [], "status", "expected 'NNN reason'"),
        ("200 OK", {"a": "b"}, "headers", "expected a list, got dict"),
        ("200 OK", [("A", "b", "c")], "headers[0]", r"expected a \(name, value\) tuple"),
        ("200 OK", [("Bad Name", "x")], "headers[0]", "invalid header name 'Bad Name'"),
        ("200 OK", [("X", "1"), ("Transfer-Encoding", "chunked")], "headers[1]", "hop-by-hop"),
        ("200 OK", [("Connection", "close")], "headers[0]", "hop-by-hop"),
        ("200 OK", [("X", "a\r\nSet-Cookie: y")], "headers[0]", "invalid value for X"),
        ("200 OK", [("X", b"bytes")], "headers[0]", "invalid value for X"),
        ("200 OK", [("X", "\u20ac")], "headers[0]", "X is not latin-1"),
    ],
)
def test_a_bad_status_or_header_is_refused_naming_it(
    status: object, headers: object, field: str, problem: str
) -> None:
    with pytest.raises(InvalidResponse, match=problem) as caught:
        response_head(status, headers)
    assert caught.value.field == field


class Body:
    """A WSGI body that records whether the server closed it."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_after:
                raise RuntimeError("secret detail")
            yield chunk

    def close(self) -> None:
        self.closed = True


def respond(app: Any, peer: Caller) -> tuple[h11.Response, bytes, Callable[[], None]]:
    reply = WsgiResponder("web", app).respond(exchange(peer))
    return reply.head, body_of(reply.body), reply.close


def test_an_application_answers_and_its_body_is_closed(fake_peer: Callable[..., Caller]) -> None:
    body = Body([b"", b"one ", b"two"])

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")  # the legacy write() comes before the iterable's chunks
        return body

    head, data, close = respond(app, fake_peer())
    assert head.status_code == 200 and data == b"written one two"
    close()
    assert body.closed


def test_start_response_may_come_with_the_first_chunk(fake_peer: Callable[..., Caller]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        yield b""
        start_response("202 Accepted", [])
        yield b"late"

    head, data, _ = respond(app, fake_peer())
    assert head.status_code == 202 and data == b"late"


def test_an_exception_is_a_500_without_details(
    fake_peer: Callable[..., Caller], caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("secret detail")

    with caplog.at_level(logging.ERROR, "teaclave_ma.rpc.wsgi"):
        head, data, _ = respond(app, fake_peer())
    assert head.status_code == 500 and data == b"internal server error\n"
    assert "secret detail" in caplog.text  # logged for the operator, never sent


def test_a_bad_header_from_the_app_is_a_500_logged(
    fake_peer: Callable[..., Caller], caplog: pytest.LogCaptureFixture
) -> None:
    body = Body([b"x"])

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("X", "a\nb")])
        return body

    with caplog.at_level(logging.ERROR, "teaclave_ma.rpc.wsgi"):
        head, data, _ = respond(app, fake_peer())
    assert head.status_code == 500 and data == b"internal server error\n"
    assert "headers[0]: invalid value for X" in caplog.text
    assert body.closed


def test_an_app_that_never_starts_the_response_is_a_500(
    fake_peer: Callable[..., Caller], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "teaclave_ma.rpc.wsgi"):
        head, _, _ = respond(lambda environ, start_response: [b"body"], fake_peer())
    assert head.status_code == 500
    assert "start_response: the application never called it" in caplog.text


def test_start_response_twice_without_exc_info_is_a_500(fake_peer: Callable[..., Caller]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]

    assert respond(app, fake_peer())[0].status_code == 500


def test_exc_info_replaces_a_head_not_yet_sent(fake_peer: Callable[..., Caller]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        try:
            raise ValueError("x")
        except ValueError as exc:
            start_response("503 Busy", [], (ValueError, exc, exc.__traceback__))
        return [b"later"]

    head, data, _ = respond(app, fake_peer())
    assert head.status_code == 503 and data == b"later"


def test_a_failure_after_the_head_ends_the_connection(fake_peer: Callable[..., Caller]) -> None:
    body = Body([b"first", b"second"], fail_after=1)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return body

    reply = WsgiResponder("web", app).respond(exchange(fake_peer()))
    chunks = iter(reply.body)
    assert next(chunks) == b"first"
    with pytest.raises(ResponseAborted, match="failed mid-response: RuntimeError"):
        next(chunks)
    reply.close()
    assert body.closed


def test_the_app_setting_is_measured_and_checked() -> None:
    assert parse_service_config(YAML, "service.yaml").app == "rpc"
    assert parse_service_config(YAML + b"app: wsgi\n", "service.yaml").app == "wsgi"
    with pytest.raises(InputError, match=r"app: expected one of rpc, wsgi, asgi, got 'django'"):
        parse_service_config(YAML + b"app: django\n", "service.yaml")


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return []


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("app", "built", "problem"),
    [
        ("rpc", wsgi_app, "returned function, not a Service; service.yaml says app: rpc"),
        ("wsgi", Service("web"), "returned a JSON-RPC Service; service.yaml says app: wsgi"),
        ("asgi", Service("web"), "returned a JSON-RPC Service; service.yaml says app: asgi"),
        ("wsgi", asgi_app, "returned an ASGI application \\(async\\); service.yaml says app: wsgi"),
        ("asgi", wsgi_app, "returned function, not an ASGI application"),
        ("wsgi", "app", "returned str, not a wsgi application"),
    ],
)
def test_what_the_entrypoint_returns_must_be_what_service_yaml_declares(
    app: str, built: object, problem: str
) -> None:
    config = parse_service_config(YAML + f"app: {app}\n".encode(), "service.yaml")
    with pytest.raises(ConfigError, match=problem) as caught:
        answering(config, built)
    assert caught.value.field == "app"


def test_an_asgi_app_sees_the_peer_in_its_scope_extensions(
    fake_peer: Callable[..., Caller],
) -> None:
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["extensions"][PEER_KEY])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    peer = fake_peer("frontend")
    config = parse_service_config(YAML + b"app: asgi\n", "service.yaml")
    responder = answering(config, app)
    assert isinstance(responder, WsgiResponder)
    try:
        reply = responder.respond(exchange(peer))
        assert reply.head.status_code == 200 and body_of(reply.body) == b"ok"
        reply.close()
    finally:
        responder.close()
    assert seen == [peer]


def test_asgi_work_after_the_response_is_cancelled_after_the_idle_timeout(
    fake_peer: Callable[..., Caller],
) -> None:
    """A background task that never ends would hold the connection's thread for good."""
    cancelled = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        try:
            await asyncio.sleep(3600)  # a background task that hangs
        except asyncio.CancelledError:
            cancelled.set()
            raise

    config = parse_service_config(
        YAML + b"app: asgi\nlimits: {idle_timeout: 0.2}\n", "service.yaml"
    )
    responder = answering(config, app)
    assert isinstance(responder, WsgiResponder)
    answered: list[bytes] = []

    def serve_one() -> None:
        reply = responder.respond(exchange(fake_peer("frontend")))
        answered.append(body_of(reply.body))
        reply.close()

    worker = threading.Thread(target=serve_one, daemon=True)
    try:
        worker.start()
        worker.join(5)
        assert not worker.is_alive(), "the connection's thread is still held by the hung task"
        assert answered == [b"ok"] and cancelled.wait(5)
    finally:
        responder.close()


DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented(path: str) -> str:
    found = re.findall(r"^<!-- file: (\S+) -->\n```\w+\n(.*?)^```", DOCS.read_text(), re.M | re.S)
    return dict(found)[path]


def test_the_documented_flask_service_answers_as_documented(
    fake_peer: Callable[..., Caller],
) -> None:
    config = parse_service_config(documented("hello-web/service.yaml").encode(), "service.yaml")
    assert config.app == "wsgi" and config.unattested_callers
    namespace: dict[str, Any] = {}
    exec(compile(documented("hello-web/app.py"), "app.py", "exec"), namespace)
    context = SimpleNamespace(name=config.name)
    responder = answering(config, namespace["build"](context))
    assert isinstance(responder, WsgiResponder)
    for peer, caller in (
        (fake_peer("frontend"), "frontend"),
        (fake_peer(attested=False), "stranger"),
    ):
        reply = responder.respond(exchange(peer, b"/hello?name=ann"))
        assert reply.head.status_code == 200
        assert json.loads(body_of(reply.body)) == {"greeting": "hello ann", "caller": caller}
        reply.close()
