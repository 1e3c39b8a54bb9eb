"""Attack catalogue, the host and the network against admission: a flood of silent
connections, strangers' quotes that would make the server fetch collateral, and JSON
nested deep enough to kill a reader. The table in docs/attacks.md ("Host and network:
admission") lists each attack with the check that stops it.

The flood comes from another process (an attacker does not share the server's
interpreter) bound to other loopback addresses (127.0.0.2 and up), so that the limit per
source and the eviction of the oldest handshake are both played.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import teaclave_ma.attestation.pccs as pccs_module
import teaclave_ma.rpc.server as server_module
from teaclave_ma.attestation.anchors import TrustAnchor
from teaclave_ma.attestation.errors import QuoteVerificationError
from teaclave_ma.attestation.pccs import PccsError, PccsUnreachable, fetch_collateral
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.attestation.single_flight import deadline
from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc import jsonrpc
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.runtime.attestation_setup import _from_pccs
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.trust.manifest_trust import AcceptedVersion, IdentityNotAccepted
from tests.attacks.test_handshake_attacks import enclave, frontend_identity, platform  # noqa: F401
from tests.attestation.conftest import SAMPLE_TIME
from tests.attestation.test_pccs import FMSPC, FakePccs, serving
from tests.integration.conftest import RuntimeFactory, deployment, runtimes  # noqa: F401
from tests.rpc.test_peer_check import Counting, Echo, ca_check, client_of, started_server
from tests.transport.test_peer_cache import STORAGE, Manifests, verified_manifest

log = logging.getLogger(__name__)

# Fair admission: silent connections refilled for FLOOD_SECONDS while an attested peer
# keeps connecting; it must get through in at least this share of its attempts.
FLOOD_SOCKETS = 300
FLOOD_SECONDS = 20.0
REQUIRED_SUCCESS = 0.95
# Linux: choose the source port at connect(), knowing the destination, so that one
# source address can open and reopen connections without running out of ports.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def silent_flood(
    address: tuple[str, int], sources: list[str], each: int, seconds: float, queue: Any
) -> None:
    """The attacker (in a process of its own): ``each`` silent TCP connections from every
    source address, each reopened as soon as the server drops it, for ``seconds``. Puts
    "ready" on ``queue`` once all are open, then how many were reopened."""
    selector = selectors.DefaultSelector()

    def open_from(source: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(address)
        selector.register(sock, selectors.EVENT_READ, source)

    for source in sources:
        for _ in range(each):
            open_from(source)
    queue.put("ready")
    reopened = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        # Readable: the server closed it (or refused it); it never sent us anything else.
        for key, _events in selector.select(timeout=min(left, 0.1)):
            selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
            open_from(key.data)
            reopened += 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    queue.put(reopened)


@contextlib.contextmanager
def flooding(address: tuple[str, int], sources: list[str], each: int) -> Iterator[Any]:
    """The flood runs (a little longer than the test's attempts) while the block runs; the
    queue then holds how many connections it reopened."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    attacker = context.Process(
        target=silent_flood, args=(address, sources, each, FLOOD_SECONDS + 2, queue), daemon=True
    )
    attacker.start()
    try:
        assert queue.get(timeout=60) == "ready"
        yield queue
    finally:
        attacker.join(timeout=FLOOD_SECONDS + 30)
        if attacker.is_alive():
            attacker.kill()


@pytest.mark.parametrize(
    "sources",
    [["127.0.0.2"], [f"127.0.0.{host}" for host in range(2, 62)]],
    ids=["one-source", "sixty-sources"],
)
def test_silent_connections_do_not_keep_attested_peers_out(
    runtimes: RuntimeFactory,  # noqa: F811
    platform: SimulatedPlatform,  # noqa: F811
    frontend_identity: SgxIdentity,  # noqa: F811
    sources: list[str],
) -> None:
    """300 silent connections (never a TLS byte), refilled as soon as the server drops
    them, from one source (held to its share of 32) or from sixty (5 each: all 256
    handshake slots taken, so each new connection evicts the oldest of a source holding
    the most). A genuine frontend keeps connecting to storage meanwhile."""
    storage = runtimes("storage")
    address = storage.start()
    server = storage.server
    assert server is not None
    credentials = enclave(platform, frontend_identity, storage.keeper.in_force)
    verifier = PeerVerifier(
        storage.keeper, storage.attestation.anchor, storage.attestation.collateral_for
    )
    attempts = successes = 0
    with flooding(address, sources, FLOOD_SOCKETS // len(sources)) as outcome:
        end = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < end:
            attempts += 1
            # A new client each time: every attempt is a fresh attested handshake.
            with PeerClient("storage", address, credentials, verifier, timeout=5.0) as client:
                try:
                    client.call("keys")
                    successes += 1
                except TeaclaveMAError as exc:
                    log.info("attempt %d failed: %s", attempts, exc)
        reopened = outcome.get(timeout=FLOOD_SECONDS + 30)
    share = successes / attempts
    log.info(
        "%s: %d of %d attempts succeeded (%.1f%%); the attacker reopened %d connections; "
        "the server refused %d and evicted %d",
        "one source" if len(sources) == 1 else f"{len(sources)} sources",
        successes,
        attempts,
        100 * share,
        reopened,
        server.admission.refused,
        server.admission.evicted,
    )
    assert share >= REQUIRED_SUCCESS, f"{successes} of {attempts} attempts succeeded"
    # The flood was real: the server had to refuse (one source) or evict (sixty) it.
    if len(sources) == 1:
        assert server.admission.refused > 0
    else:
        assert server.admission.evicted > 0


# Cheap checks before any fetch: a PCCS-backed peer check, its PCCS on loopback.


@pytest.fixture
def pccs(shared_data: Path) -> Iterator[FakePccs]:
    with serving((shared_data / "sgx" / "collateral.json").read_bytes()) as server:
        yield server


def peer_certificate(platform: SimulatedPlatform, identity: SgxIdentity) -> bytes:  # noqa: F811
    return create_ratls_certificate(
        ec.generate_private_key(ec.SECP256R1()),
        lambda report_data: platform.quote(identity, report_data),
        common_name="storage",
        now=dt.datetime.now(dt.UTC),
        lifetime=dt.timedelta(hours=1),
        manifest=AcceptedVersion(1, bytes(32).hex()),  # compared only once verified
    )


class PccsChecked:
    """A peer check as a deployment with a PCCS makes it (``attestation_setup``), trusting
    ``trusted``'s root, with a manifest that accepts ``STORAGE`` for storage."""

    def __init__(self, trusted: SimulatedPlatform, pccs: FakePccs, cache: Path) -> None:
        self.verifier = PeerVerifier(
            Manifests(verified_manifest({"storage": [STORAGE]})),
            TrustAnchor.for_root(trusted.root_certificate_der, "the deployment's root"),
            _from_pccs(pccs.url, cache, "standard"),
        )


def test_a_strangers_quote_costs_no_pccs_request(pccs: FakePccs, tmp_path: Path) -> None:
    """A self-made PCK chain (its own root, a random FMSPC) quoting the accepted enclave."""
    check = PccsChecked(SimulatedPlatform.create(), pccs, tmp_path)
    stranger = SimulatedPlatform.create()
    with pytest.raises(QuoteVerificationError) as caught:
        check.verifier.verify(peer_certificate(stranger, STORAGE), ["storage"])
    assert caught.value.check == "pck_chain"
    assert "which is not the trusted root" in str(caught.value)
    assert pccs.requests == []


def test_a_quote_no_manifest_entry_accepts_costs_no_pccs_request(
    pccs: FakePccs, tmp_path: Path
) -> None:
    """A genuine PCK chain, quoting an enclave that no entry of storage accepts."""
    trusted = SimulatedPlatform.create()
    check = PccsChecked(trusted, pccs, tmp_path)
    other = SgxIdentity(b"\x71" * 32, b"\x62" * 32, isv_prod_id=4, isv_svn=1, debug=False)
    with pytest.raises(IdentityNotAccepted) as caught:
        check.verifier.verify(peer_certificate(trusted, other), ["storage"])
    assert f"mr_enclave {'71' * 8}... != {'61' * 8}..." in str(caught.value)
    assert pccs.requests == []
    # The same platform quoting the accepted enclave does reach the PCCS (which has no
    # collateral for its FMSPC): the count above could have been more than zero.
    with pytest.raises(PccsError):
        check.verifier.verify(peer_certificate(trusted, STORAGE), ["storage"])
    assert pccs.requests == ["/sgx/certification/v4/pckcrl"]


def test_concurrent_misses_for_one_fmspc_share_one_fetch(
    pccs: FakePccs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    callers = 20
    arrived = threading.Semaphore(0)
    fetch = pccs_module._Pccs.fetch

    def after_every_caller_arrived(self: Any, *args: Any) -> bytes:
        for _ in range(callers - 1):  # the others have called; now let them reach the wait
            arrived.acquire(timeout=10)
        time.sleep(0.2)
        return fetch(self, *args)

    monkeypatch.setattr(pccs_module._Pccs, "fetch", after_every_caller_arrived)

    def caller() -> bytes:
        arrived.release()
        return fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)

    threads: list[threading.Thread] = []
    results: list[bytes] = []
    for _ in range(callers):
        thread = threading.Thread(target=lambda: results.append(caller()))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == callers and len(set(results)) == 1
    # One fetch: its four requests, once.
    assert sorted(pccs.requests) == sorted(
        f"/sgx/certification/v4/{path}" for path in ("pckcrl", "tcb", "qe/identity", "rootcacrl")
    )


def test_a_caller_waits_for_a_shared_fetch_no_longer_than_its_deadline(
    pccs: FakePccs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetching = threading.Event()
    release = threading.Event()
    fetch = pccs_module._Pccs.fetch

    def hanging(self: Any, *args: Any) -> bytes:
        fetching.set()
        release.wait(30)
        return fetch(self, *args)

    monkeypatch.setattr(pccs_module._Pccs, "fetch", hanging)
    leader = threading.Thread(
        target=fetch_collateral, args=(pccs.url, FMSPC, "processor", tmp_path),
        kwargs={"now": SAMPLE_TIME},
    )  # fmt: skip
    leader.start()
    try:
        assert fetching.wait(10)
        with (
            deadline(time.monotonic() + 0.3),
            pytest.raises(PccsUnreachable, match="another caller's fetch did not end within"),
        ):
            fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    finally:
        release.set()
        leader.join(timeout=30)
    assert len(pccs.requests) == 4  # the leader's fetch, once; the waiter asked nothing


# Bounded JSON: nesting deep enough to exhaust a recursive reader.

DEPTH = 100_000


@pytest.fixture
def echo_server() -> Iterator[tuple[Echo, Counting, Any]]:
    echo, check = Echo(), Counting(ca_check("server"))
    server = started_server(echo, check)
    yield echo, check, server
    server.stop()


def test_a_deeply_nested_request_is_a_parse_error_and_the_connection_serves_on(
    echo_server: tuple[Echo, Counting, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    echo, check, server = echo_server
    deep = b'{"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"value": %s}}' % (
        b"[" * DEPTH + b"]" * DEPTH
    )
    with client_of(server) as client:
        monkeypatch.setattr("teaclave_ma.rpc.client.encode_request", lambda request_id, *_: deep)
        with pytest.raises(RpcError) as caught:
            client.call("echo", value=None)
        monkeypatch.undo()
        assert caught.value.code == jsonrpc.PARSE_ERROR
        assert f"request nests {DEPTH + 2} levels deep" in caught.value.message
        assert client.call("echo", value="next") == "next"
    assert check.calls == 1  # the same connection served the next request
    assert echo.requests == 1  # only that one reached the service


def test_a_deeply_nested_response_is_a_typed_error_in_the_client(
    echo_server: tuple[Echo, Counting, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _echo, _check, server = echo_server
    deep = b'{"jsonrpc": "2.0", "id": 1, "result": %s}' % (b"[" * DEPTH + b"]" * DEPTH)
    monkeypatch.setattr(server_module, "encode_result", lambda *_: deep)
    with client_of(server) as client, pytest.raises(RpcError) as caught:
        client.call("echo", value=1)
    assert caught.value.code == jsonrpc.PARSE_ERROR
    assert f"response nests {DEPTH + 1} levels deep" in caught.value.message


def test_a_result_too_deep_to_encode_is_an_internal_error_answer(
    echo_server: tuple[Echo, Counting, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    echo, _check, server = echo_server
    deep: list[Any] = []
    for _ in range(DEPTH):  # built without recursion; encoding it would need it
        deep = [deep]
    monkeypatch.setattr(echo, "dispatch", lambda *_: deep)
    with client_of(server) as client:
        with pytest.raises(RpcError) as caught:
            client.call("echo", value=1)
        assert caught.value.code == jsonrpc.INTERNAL_ERROR
        monkeypatch.undo()
        assert client.call("echo", value="next") == "next"
