"""Secret owners: the parties allowed to put, rotate and delete what the kms holds.

An owner holds an Ed25519 key, like an auditor's; its public key is measured (the
``owners:`` list of the trust file embedded in the kms image). An owner reaches the kms over
one-way attested TLS: it verifies the kms as the manifest's ``kms`` before sending a byte,
and presents a self-signed certificate for its own key, which the TLS 1.3 handshake makes it
prove it holds. The kms admits such a certificate on an edge whose measured ``inbound`` list
names ``owners`` (a reserved name, no service's) when its key is one of the owners.

Every change is signed besides: over (operation, name, version, value digest, store id),
so a captured request cannot be replayed. The version is the secret's next one (a counter
per secret that deletion keeps), and the store id is the random id of the kms's sealed store,
so a request for one kms means nothing to another, or to the same kms after a reset.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from teaclave_ma.crypto.auditor_key import AuditorPublicKey, AuditorSigningKey
from teaclave_ma.errors import VerificationError
from teaclave_ma.formats.service_config import OWNERS_EDGE
from teaclave_ma.formats.trust import TrustedAuditor
from teaclave_ma.transport.credentials import TlsCredentials
from teaclave_ma.transport.peer_verify import PeerIdentity, PeerVerifier
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted

OPERATIONS = ("put", "rotate", "delete")
REQUEST_DOMAIN = "teaclave-ma kms owner request v1"
CERTIFICATE_LIFETIME = dt.timedelta(hours=1)


class OwnerRefused(VerificationError):
    """An owner request the kms must not carry out; ``check`` names what failed."""


@attrs.frozen
class OwnerPeer:
    """A caller that proved an owner's key in its TLS certificate."""

    name: str
    key_id: str

    def describe(self) -> str:
        return f"owner {self.name} ({self.key_id[:16]}...)"


Caller = PeerIdentity | OwnerPeer


def value_digest(value: bytes | None) -> str:
    return "" if value is None else hashlib.sha256(value).hexdigest()


@attrs.frozen
class OwnerRequest:
    """One signed change: ``value_sha256`` is empty for a deletion."""

    operation: str
    name: str
    version: int
    value_sha256: str
    store: str

    def message(self) -> bytes:
        return json.dumps(
            [REQUEST_DOMAIN, self.operation, self.name, self.version, self.value_sha256, self.store]
        ).encode()

    def sign(self, key: AuditorSigningKey) -> bytes:
        return key.sign(self.message())


def check_signed(
    request: OwnerRequest,
    key_id: str,
    signature: bytes,
    owners: Mapping[str, TrustedAuditor],
    store: str,
    *,
    operations: Sequence[str] = OPERATIONS,
) -> TrustedAuditor:
    """The owner who signed ``request`` for this store (a kms's id, or the scope of a direct
    provisioning), or ``OwnerRefused``."""
    owner = owners.get(key_id)
    if owner is None:
        raise OwnerRefused(
            "owner.key", f"key {key_id[:16]}... is not one of the owners measured into the kms"
        )
    if not owner.public_key.verify(request.message(), signature):
        raise OwnerRefused(
            "owner.signature", f"the request is not signed by owner {owner.name!r}'s key"
        )
    if request.store != store:
        raise OwnerRefused(
            "owner.store",
            f"the request was signed for kms store {request.store[:16]}..., this is {store[:16]}...",
        )
    if request.operation not in operations:
        raise OwnerRefused(
            "owner.operation",
            f"operation {request.operation!r} is not taken here (known: {', '.join(operations)})",
        )
    return owner


def owner_credentials(key: AuditorSigningKey, name: str, now: dt.datetime) -> TlsCredentials:
    """A short-lived self-signed certificate for the owner's own key."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(key.seed)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"teaclave-ma owner {name}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .sign(private, None)
    )
    return TlsCredentials(private, certificate)


def _owner_key(certificate: bytes) -> AuditorPublicKey | None:
    """The Ed25519 key of a certificate self-signed with it; None for any other certificate
    (an RA-TLS one), which the enclave check then judges."""
    try:
        parsed = x509.load_der_x509_certificate(certificate)
        key = parsed.public_key()
    except ValueError:
        return None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    try:
        key.verify(parsed.signature, parsed.tbs_certificate_bytes)
    except InvalidSignature:
        raise IdentityNotAccepted("the owner certificate is not signed by its own key") from None
    return AuditorPublicKey(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


class OwnerAdmission:
    """The server's peer check where ``owners`` is inbound: an owner's certificate is
    admitted by its key, any other goes through the enclave check for the rest of the list."""

    def __init__(self, enclaves: PeerVerifier, owners: Sequence[TrustedAuditor]) -> None:
        self._enclaves = enclaves
        self._owners = {owner.key_id: owner for owner in owners}

    def verify(self, certificate: bytes, services: Sequence[str]) -> Caller:
        others = [service for service in services if service != OWNERS_EDGE]
        if len(others) < len(services):
            key = _owner_key(certificate)
            if key is not None:
                owner = self._owners.get(key.key_id)
                if owner is None:
                    raise IdentityNotAccepted(
                        f"certificate key {key.key_id[:16]}... is not one of the owners "
                        "measured into this service"
                    )
                return OwnerPeer(owner.name, owner.key_id)
        return self._enclaves.verify(certificate, others)

    def recheck(self, peer: Caller) -> None:
        if isinstance(peer, PeerIdentity):
            self._enclaves.recheck(peer)
