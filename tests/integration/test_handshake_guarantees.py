"""What crosses the wire before verification: nothing. Checked with raw TLS peers."""

from __future__ import annotations

import datetime as dt
import socket
import struct
import threading
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

import teaclave_ma.rpc.server as server_module
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.transport.tls import PeerRejected
from tests.helpers import wait_until

RuntimeFactory = Callable[..., ServiceRuntime]
REQUEST = b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def plain_self_signed() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An ordinary self-signed certificate: no quote, so no attestation."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def raw_context(
    method: int, *, certificate: bool = True, max_version: int | None = None
) -> SSL.Context:
    context = SSL.Context(method)
    if certificate:
        key, cert = plain_self_signed()
        context.use_certificate(cert)
        context.use_privatekey(key)
    context.set_verify(SSL.VERIFY_NONE)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    return context


def raw_client_exchange(address: tuple[str, int], context: SSL.Context) -> bytes:
    """Handshake, send an RPC request, and read what comes back (b"" or an exception)."""
    sock = socket.create_connection(address)
    # Blocking mode for pyOpenSSL, with a kernel-level timeout so the test cannot hang.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    conn = SSL.Connection(context, sock)
    conn.set_connect_state()
    try:
        conn.do_handshake()
        conn.sendall(REQUEST)
        return conn.recv(4096)
    except (SSL.Error, OSError):
        return b""
    finally:
        sock.close()


@pytest.fixture
def storage(runtimes: RuntimeFactory) -> ServiceRuntime:
    runtime = runtimes("storage")
    runtime.start()
    return runtime


@pytest.fixture
def request_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call the server makes to read an HTTP request."""
    calls: list[object] = []
    original = server_module.read_message

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "read_message", spy)
    return calls


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(lambda: raw_context(SSL.TLS_CLIENT_METHOD), id="self-signed-without-quote"),
        pytest.param(
            lambda: raw_context(SSL.TLS_CLIENT_METHOD, certificate=False),
            id="no-client-certificate",
        ),
        pytest.param(
            lambda: raw_context(SSL.TLS_CLIENT_METHOD, max_version=SSL.TLS1_2_VERSION),
            id="tls-1.2-downgrade",
        ),
    ],
)
def test_server_reads_no_request_bytes_from_an_unverified_client(
    storage: ServiceRuntime, request_reads: list[object], context: Callable[[], SSL.Context]
) -> None:
    assert storage.server is not None
    answer = raw_client_exchange(storage.server.address, context())
    assert answer == b""
    assert request_reads == []


def test_server_counts_and_logs_a_refused_client(
    storage: ServiceRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    assert storage.server is not None
    raw_client_exchange(storage.server.address, raw_context(SSL.TLS_CLIENT_METHOD))
    server = storage.server
    wait_until(lambda: server.rejections != 0)  # the server thread logs after its alert
    assert server.rejections == 1
    assert "storage refused client" in caplog.text
    assert "carries no SGX quote" in caplog.text


class RecordingServer:
    """A TLS 1.3 server with an ordinary certificate that records every byte it receives."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        context = raw_context(SSL.TLS_SERVER_METHOD)
        sock, _ = self.listener.accept()
        conn = SSL.Connection(context, sock)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            while chunk := conn.recv(4096):
                self.received.extend(chunk)
        except (SSL.Error, OSError):
            pass
        finally:
            sock.close()
            self.listener.close()


def test_client_sends_no_request_bytes_to_an_unverified_server(runtimes: RuntimeFactory) -> None:
    impostor = RecordingServer()
    frontend = runtimes("frontend", storage=impostor.address, authentication=impostor.address)
    client = PeerClient(
        "storage", impostor.address, frontend.credentials, frontend.verifier, timeout=5
    )
    with pytest.raises(PeerRejected) as caught:
        client.call("get", key="user/ada")
    impostor.thread.join(timeout=10)
    assert bytes(impostor.received) == b""
    assert "carries no SGX quote" in str(caught.value)
