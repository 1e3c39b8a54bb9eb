"""Real web applications (Flask over WSGI, Starlette over ASGI) served as attested services."""

from __future__ import annotations

import json
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

import teaclave_ma
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.rpc.http import read_message, send_message
from teaclave_ma.runtime.service_runtime import EnclaveNode, ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import ContextCache, RefusedByPeer, SecureChannel, handshake
from tests.helpers import wait_until

LIMIT = 4096

FLASK_APP = """\
from flask import Flask, jsonify, request

SEEN = []


def build(context):
    app = Flask(context.name)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # let the attested server answer the 500

    @app.route("/whoami")
    def whoami():
        SEEN.append(request.path)
        peer = request.environ["teaclave_ma.peer"]
        return jsonify(attested=peer.attested, service=peer.service, q=request.args.get("q"))

    @app.post("/echo")
    def echo():
        SEEN.append(request.path)
        return jsonify(length=len(request.get_data()))

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret detail")

    @app.route("/seen")
    def seen():
        return jsonify(seen=len(SEEN))

    @app.route("/multiprocess")
    def multiprocess():
        return jsonify(multiprocess=request.environ["wsgi.multiprocess"])

    return app
"""

STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SEEN = []


def build(context):
    async def whoami(request):
        SEEN.append(request.url.path)
        peer = request.scope["extensions"]["teaclave_ma.peer"]
        return JSONResponse(
            {"attested": peer.attested, "service": peer.service, "q": request.query_params.get("q")}
        )

    async def echo(request):
        SEEN.append(request.url.path)
        return JSONResponse({"length": len(await request.body())})

    async def boom(request):
        raise RuntimeError("secret detail")

    async def seen(request):
        return JSONResponse({"seen": len(SEEN)})

    async def multiprocess(request):
        return JSONResponse({"multiprocess": request.scope["wsgi_environ"]["wsgi.multiprocess"]})

    return Starlette(routes=[
        Route("/whoami", whoami), Route("/echo", echo, methods=["POST"]),
        Route("/boom", boom), Route("/seen", seen), Route("/multiprocess", multiprocess),
    ])
"""

APPS = {"flaskweb": ("wsgi", FLASK_APP), "starletteweb": ("asgi", STARLETTE_APP)}


def service_yaml(name: str, app: str) -> str:
    return (
        f"name: {name}\nentrypoint: app:build\napp: {app}\n"
        f"enclave: {{isv_prod_id: {20 + len(name)}, isv_svn: 1}}\n"
        f"inbound: [webcaller, {{callers: any}}]\nlimits: {{max_request_bytes: {LIMIT}}}\n"
    )


def caller_yaml(name: str, prod_id: int) -> str:
    return (
        f"name: {name}\nenclave: {{isv_prod_id: {prod_id}, isv_svn: 1}}\n"
        f"outbound: [flaskweb, starletteweb]\n"
    )


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> SimulatedDeployment:
    """Both apps, an enclave they admit (webcaller) and one they do not (stranger), all in
    the manifest."""
    sources = tmp_path_factory.mktemp("web-sources")
    for name, (app, code) in APPS.items():
        (sources / name).mkdir()
        (sources / name / "service.yaml").write_text(service_yaml(name, app))
        (sources / name / "app.py").write_text(code)
    for name, prod_id in (("webcaller", 40), ("stranger", 41)):
        (sources / name).mkdir()
        (sources / name / "service.yaml").write_text(caller_yaml(name, prod_id))
    deployment = SimulatedDeployment.create(tmp_path_factory.mktemp("web"), sources)
    names = [*APPS, "webcaller", "stranger"]
    for name in names:
        deployment.build(name, source=sources / name)
    deployment.publish_manifest(
        {name: deployment.review(name) for name in names}, version=1, signers=["alice", "bob"]
    )
    return deployment


def _runtime_config(deployment: SimulatedDeployment, name: str, **peers: tuple[str, int]) -> Any:
    path = deployment.runtime_config(name, peers=peers)
    return parse_runtime_config(path.read_bytes(), path.parent)


@pytest.fixture(scope="module", params=list(APPS))
def server(request: pytest.FixtureRequest, web: SimulatedDeployment) -> Iterator[ServiceRuntime]:
    runtime = ServiceRuntime(
        web.images[request.param],
        _runtime_config(web, request.param),
        web.manifest_path,
        web.signatures_dir,
        initialize_state=True,
    )
    runtime.start()
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def callers(web: SimulatedDeployment) -> Iterator[dict[str, EnclaveNode]]:
    nodes = {
        name: EnclaveNode(
            web.images[name],
            # Their outbound clients go unused: the tests connect with WebPeer.
            _runtime_config(web, name, **dict.fromkeys(APPS, ("127.0.0.1", 1))),
            web.manifest_path,
            web.signatures_dir,
            initialize_state=True,
        )
        for name in ("webcaller", "stranger")
    }
    yield nodes
    for node in nodes.values():
        node.close()


class WebPeer:
    """An enclave's HTTP/1.1 connection to a web service, verified by RA-TLS both ways."""

    def __init__(self, node: EnclaveNode, server: ServiceRuntime) -> None:
        assert server.server is not None
        self.service = server.image.service.name
        sock = socket.create_connection(server.server.address, timeout=10)
        self.channel: SecureChannel[PeerIdentity] = handshake(
            sock,
            ContextCache(node.credentials, server=False).get(),
            lambda der: node.verifier.verify(der, [self.service]),
            server=False,
            timeout=10,
            server_hostname=self.service,
        )
        self.http = h11.Connection(h11.CLIENT)

    def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        headers = [(b"Host", self.service.encode()), (b"Content-Length", b"%d" % len(body))]
        head = h11.Request(method=method.encode(), target=target.encode(), headers=headers)
        send_message(self.channel, self.http, head, body)
        message = read_message(self.channel, self.http, max_body=1 << 20, timeout=10)
        assert message is not None
        response, data = message
        assert isinstance(response, h11.Response)
        if h11.MUST_CLOSE not in (self.http.our_state, self.http.their_state):
            self.http.start_next_cycle()
        return response.status_code, data

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def peer(callers: dict[str, EnclaveNode], server: ServiceRuntime) -> Iterator[WebPeer]:
    connection = WebPeer(callers["webcaller"], server)
    yield connection
    connection.close()


def test_the_app_sees_the_attested_caller(peer: WebPeer) -> None:
    assert peer.channel.peer.service == peer.service  # the server passed our RA-TLS check
    status, body = peer.request("GET", "/whoami?q=hi")
    assert status == 200
    assert json.loads(body) == {"attested": True, "service": "webcaller", "q": "hi"}
    # Keep-alive: the same attested connection carries the next request.
    status, body = peer.request("POST", "/echo", b"x" * 100)
    assert (status, json.loads(body)) == (200, {"length": 100})


def test_the_app_is_told_whether_other_processes_serve_it(
    web: SimulatedDeployment,
    callers: dict[str, EnclaveNode],
    server: ServiceRuntime,
    peer: WebPeer,
) -> None:
    """PEP 3333's wsgi.multiprocess: False for one process, True for each of several workers
    (``serve --workers N``, which tells the runtime before it forks)."""
    assert json.loads(peer.request("GET", "/multiprocess")[1]) == {"multiprocess": False}
    name = server.image.service.name
    worker = ServiceRuntime(
        web.images[name], _runtime_config(web, name), web.manifest_path, web.signatures_dir
    )
    try:
        worker.served_by(2)
        worker.serve(("127.0.0.1", 0), reuse_port=True)
        shared = WebPeer(callers["webcaller"], worker)
        try:
            assert json.loads(shared.request("GET", "/multiprocess")[1]) == {"multiprocess": True}
        finally:
            shared.close()
    finally:
        worker.stop()


def test_an_app_that_raises_is_a_500_and_the_server_serves_on(
    peer: WebPeer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status, body = peer.request("GET", "/boom")
        # The connection serves on; and its next answer comes only after the last one's
        # body was done with (Starlette raises after sending its 500).
        assert peer.request("GET", "/whoami")[0] == 200
    assert status == 500 and b"secret detail" not in body and b"Traceback" not in body
    assert "secret detail" in caplog.text  # the operator sees it in the log


def test_a_body_over_the_limit_is_refused_before_the_app(
    callers: dict[str, EnclaveNode], server: ServiceRuntime
) -> None:
    connection = WebPeer(callers["webcaller"], server)
    try:
        before = json.loads(connection.request("GET", "/seen")[1])["seen"]
        status, body = connection.request("POST", "/echo", b"x" * (LIMIT + 1))
    finally:
        connection.close()
    assert status == 413
    assert f"exceeds the limit of {LIMIT}".encode() in body
    connection = WebPeer(callers["webcaller"], server)  # that connection was closed
    try:
        assert json.loads(connection.request("GET", "/seen")[1])["seen"] == before
    finally:
        connection.close()


def test_an_enclave_outside_inbound_is_refused_at_the_handshake(
    callers: dict[str, EnclaveNode],
    server: ServiceRuntime,
    peer: WebPeer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = json.loads(peer.request("GET", "/seen")[1])["seen"]
    assert server.server is not None
    reason = "it is the manifest's 'stranger', which is not allowed on this edge"
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RefusedByPeer):  # in the handshake, or as TLS 1.3 ends it
            WebPeer(callers["stranger"], server).request("GET", "/whoami")
        # The server logs its reason as the refusal leaves; the client may see it first.
        assert wait_until(lambda: reason in caplog.text)
    assert json.loads(peer.request("GET", "/seen")[1])["seen"] == before  # never invoked


def test_an_outside_client_pinning_the_fetched_certificate_is_unattested(
    web: SimulatedDeployment, server: ServiceRuntime, tmp_path: Path
) -> None:
    assert server.server is not None
    host, port = server.server.address
    name = server.image.service.name
    identity, pem = teaclave_ma.fetch_certificate(
        (host, port),
        service=name,
        manifest=web.manifest_path,
        signatures=web.signatures_dir,
        trust=web.trust_path,
        simulated_platform=web.platform_dir,
    )
    assert identity.service == name
    context = ssl.create_default_context(cadata=pem.decode())
    context.check_hostname = False  # the certificate names the service (CN), not the host
    with httpx.Client(verify=context) as client:
        response = client.get(f"https://{host}:{port}/whoami", params={"q": "web"})
    assert response.status_code == 200
    assert response.json() == {"attested": False, "service": None, "q": "web"}
