"""Callers that are not enclaves, on the edges a service opens to them.

A service that lists ``{callers: any}`` in its measured ``inbound`` also serves clients
that present no certificate. Their handlers see an ``UnattestedPeer``: no service name, no
measurement, ``attested`` False. A client that presents a certificate is still checked
against the inbound services, and refused if it fails: a certificate is never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.transport.tls import PeerAuthenticator


@attrs.frozen
class UnattestedPeer:
    """A caller that proved nothing about itself (no certificate, no quote)."""

    @property
    def attested(self) -> bool:
        return False

    @property
    def service(self) -> None:
        """No service name: only an attested peer has one."""
        return None

    def describe(self) -> str:
        return "an unattested caller"


# What a handler's first parameter is: an attested enclave or, on an open edge, not.
Caller = PeerIdentity | UnattestedPeer


class OpenEdge:
    """The server's peer check on a service open to unattested callers: certificates go
    through ``verifier`` as on any service; an unattested peer has nothing to recheck."""

    def __init__(self, verifier: PeerAuthenticator[PeerIdentity]) -> None:
        self._verifier = verifier

    def verify(self, certificate: bytes, services: Sequence[str]) -> Caller:
        return self._verifier.verify(certificate, services)

    def recheck(self, peer: Caller) -> None:
        if isinstance(peer, PeerIdentity):
            self._verifier.recheck(peer)
