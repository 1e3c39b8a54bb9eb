"""Calling a service from outside any enclave: a one-way attested client.

The caller presents no certificate; it verifies the server before a byte is sent: the
server's quote (under Intel's root with the given collateral, or under a simulated
platform's root the caller names), its key binding, and that its identity is the
manifest's entry for ``service``. The manifest must carry enough signatures of the
auditors in the caller's own trust file (never one from the server). Only services that
list ``{callers: any}`` in their inbound accept such a client.

``AsyncClient`` runs the blocking client in a thread pool of its own (one thread per
connection it may hold), so calls never block the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import socket
from collections.abc import Collection
from pathlib import Path
from typing import Any, Self

from OpenSSL import crypto

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA, TrustAnchor
from teaclave_ma.attestation.policy import VerificationPolicy
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.errors import InputError
from teaclave_ma.formats.runtime_config import AttestationConfig, parse_address
from teaclave_ma.formats.strict import read_bounded
from teaclave_ma.formats.trust import parse_trust_file
from teaclave_ma.rpc.client import DEFAULT_MAX_CONNECTIONS, MutualTlsClient
from teaclave_ma.runtime.attestation_setup import peer_collateral
from teaclave_ma.transport.peer_verify import PeerIdentity, PeerVerifier
from teaclave_ma.transport.tls import ContextCache, TransportError, handshake
from teaclave_ma.trust.keeper import ManifestKeeper
from teaclave_ma.trust.manifest_trust import ManifestTrust

log = logging.getLogger(__name__)

PathLike = str | Path
MAX_TRUST_BYTES = 1 << 20


class Client(MutualTlsClient[PeerIdentity]):
    """A verified client of one service; ``call(method, **params)`` as in a service."""


def outside_verifier(
    *,
    manifest: PathLike,
    signatures: PathLike,
    trust: PathLike,
    simulated_platform: PathLike | None = None,
    collateral: PathLike | None = None,
    pccs: str | None = None,
    allow_status: Collection[str] = (),
) -> PeerVerifier:
    """How a party outside any enclave (a caller, a kms owner) checks a service: the
    manifest must pass the caller's own trust file, and the server must be its entry."""
    trust_file = parse_trust_file(read_bounded(Path(trust), MAX_TRUST_BYTES), str(trust))
    keeper = ManifestKeeper(ManifestTrust(trust_file), Path(manifest), Path(signatures))
    keeper.load()  # raises: nothing is called under a manifest that does not verify
    anchor: TrustAnchor
    if simulated_platform is not None:
        if collateral is not None or pccs is not None:
            raise InputError(
                "simulated_platform", "give it alone: its platform serves the collateral"
            )
        platform = SimulatedPlatform.load(Path(simulated_platform))
        anchor = TrustAnchor.for_root(
            platform.root_certificate_der, f"simulated platform at {simulated_platform}"
        )
        log.warning(
            "SIMULATED attestation: the server is verified against the simulated root at %s; "
            "nothing proves that it runs in real SGX hardware",
            simulated_platform,
        )
        collateral_for = platform.collateral_for()
    else:
        anchor = INTEL_SGX_ROOT_CA
        collateral_for = peer_collateral(
            AttestationConfig(
                collateral_file=Path(collateral) if collateral is not None else None,
                pccs_url=pccs,
                pccs_cache=Path("pccs-cache") if pccs is not None else None,
            )
        )
    policy = VerificationPolicy(allowed_tcb_statuses={"UpToDate", *allow_status})
    return PeerVerifier(keeper, anchor, collateral_for, policy)


def _address(address: str | tuple[str, int]) -> tuple[str, int]:
    return address if isinstance(address, tuple) else parse_address(address, "address")


def connect(
    address: str | tuple[str, int],
    *,
    service: str,
    manifest: PathLike,
    signatures: PathLike,
    trust: PathLike,
    simulated_platform: PathLike | None = None,
    collateral: PathLike | None = None,
    pccs: str | None = None,
    allow_status: Collection[str] = (),
    timeout: float = 30.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Client:
    """A client of ``service`` at ``address`` (``"HOST:PORT"``), verified now.

    ``manifest``/``signatures``/``trust``: the signed manifest, its signature directory,
    and the caller's own trust file (auditors and threshold). Peers' quotes are checked
    under Intel's root with ``collateral`` (a JSON file) or a ``pccs`` URL, or, for
    development, under the root of ``simulated_platform`` (a directory; logged loudly).
    ``allow_status``: TCB statuses accepted besides UpToDate. Raises a
    ``VerificationError`` if the server is not the manifest's ``service``."""
    verifier = outside_verifier(
        manifest=manifest,
        signatures=signatures,
        trust=trust,
        simulated_platform=simulated_platform,
        collateral=collateral,
        pccs=pccs,
        allow_status=allow_status,
    )
    client = Client(
        service,
        _address(address),
        None,
        verifier,
        timeout=timeout,
        max_connections=max_connections,
    )
    try:
        client.connect()
    except BaseException:
        client.close()
        raise
    return client


def fetch_certificate(
    address: str | tuple[str, int],
    *,
    service: str,
    timeout: float = 30.0,
    **verification: Any,
) -> tuple[PeerIdentity, bytes]:
    """The server's verified identity and its certificate (PEM), checked as by ``connect``
    (same keyword arguments); nothing is returned for a server that fails the check."""
    verifier = outside_verifier(**{"allow_status": (), **verification})
    host, port = _address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {service} at {host}:{port}: {exc}") from exc
    try:
        channel = handshake(
            sock,
            ContextCache(None, server=False).get(),
            lambda der: verifier.verify(der, [service]),
            server=False,
            timeout=timeout,
            server_hostname=service,
        )
    except BaseException:
        sock.close()
        raise
    try:
        certificate = channel.conn.get_peer_certificate()
        assert certificate is not None  # the handshake verified it
        return channel.peer, crypto.dump_certificate(crypto.FILETYPE_PEM, certificate)
    finally:
        channel.close()


class AsyncClient:
    """``Client`` for asyncio: ``await client.call(method, **params)``. Each call runs the
    blocking client in this client's thread pool, so the event loop never waits on it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=client.max_connections, thread_name_prefix=f"{client.service}-call"
        )

    async def call(self, method: str, /, **params: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self.client.call, method, **params)
        )

    async def aclose(self) -> None:
        self.client.close()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def connect_async(address: str | tuple[str, int], **options: Any) -> AsyncClient:
    """``connect`` (same arguments) without blocking the event loop; an ``AsyncClient``."""
    loop = asyncio.get_running_loop()
    client = await loop.run_in_executor(None, functools.partial(connect, address, **options))
    return AsyncClient(client)
