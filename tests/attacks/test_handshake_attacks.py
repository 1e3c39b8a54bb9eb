"""Attack catalogue, the handshake: one test per attack on the connection, each over a real
mutual RA-TLS handshake on loopback between simulated enclaves of the example deployment.

Each test asserts the typed refusal on the side that refuses (the server's is recorded
from its handshake, the client's is what its call raises) and that no RPC request reached
any handler. The victim is ``storage`` (inbound: frontend, authentication); most attackers
pose as ``frontend``. The table in docs/attacks.md lists each attack with its check.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

import teaclave_ma.rpc.server as server_module
import tests.integration.test_handshake_guarantees as guarantees
from teaclave_ma.attestation.attester import SimulatedAttester
from teaclave_ma.attestation.errors import PolicyRejected
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc.client import PeerClient
from teaclave_ma.runtime.service_runtime import ServiceRuntime
from teaclave_ma.testing.deployment import SimulatedDeployment
from teaclave_ma.transport.credentials import CredentialSource, ManifestInForce, RotatingCredentials
from teaclave_ma.transport.errors import EvidenceError
from teaclave_ma.transport.evidence import (
    LEGACY_QUOTE_OID,
    MAX_CERTIFICATE,
    MAX_EXTENSION,
    TCG_EVIDENCE_OID,
    extract_evidence,
    tcg_claims,
)
from teaclave_ma.transport.peer_verify import PeerVerifier
from teaclave_ma.transport.ratls_cert import create_ratls_certificate
from teaclave_ma.transport.tls import PeerRejected, RefusedByPeer, TransportError
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted
from tests.helpers import (
    attacker_credentials,
    craft_certificate,
    legacy_quote,
    record_raised,
    record_requests,
    spki_of,
    tcg_evidence,
    tcg_extension,
    wait_until,
)
from tests.integration.conftest import RuntimeFactory, deployment, runtimes  # noqa: F401
from tests.integration.test_handshake_guarantees import (
    RecordingServer,
    raw_client_exchange,
    raw_context,
)

CLIENT_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def platform(deployment: SimulatedDeployment) -> SimulatedPlatform:  # noqa: F811
    """The deployment's simulated platform: its quotes verify wherever the services run."""
    return SimulatedPlatform.load(deployment.platform_dir)


@pytest.fixture(scope="module")
def frontend_identity(deployment: SimulatedDeployment) -> SgxIdentity:  # noqa: F811
    return deployment.images["frontend"].identity


def enclave(
    platform: SimulatedPlatform, identity: SgxIdentity, manifest: ManifestInForce
) -> RotatingCredentials:
    """Genuine RA-TLS credentials of an enclave with ``identity`` on the platform, claiming
    the manifest ``manifest()`` names."""
    return RotatingCredentials(SimulatedAttester(platform, identity), "frontend", manifest=manifest)


def certificate_der(credentials: CredentialSource) -> bytes:
    return credentials.current().certificate.public_bytes(serialization.Encoding.DER)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def requests_read(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every HTTP request any server in this process read: none may follow a refusal."""
    return record_requests(monkeypatch)


@attrs.frozen
class Victim:
    """``storage``, serving; ``refusal_of`` connects as a would-be frontend and returns
    the typed reason storage gave for refusing it."""

    runtime: ServiceRuntime
    address: tuple[str, int]
    refusals: list[Exception]  # what storage's handshakes raised

    @property
    def in_force(self) -> ManifestInForce:
        return self.runtime.keeper.in_force

    def refusal_of(self, credentials: CredentialSource) -> Exception:
        # The attacker checks storage properly: the refusal must come from storage.
        verifier = PeerVerifier(
            self.runtime.keeper,
            self.runtime.attestation.anchor,
            self.runtime.attestation.collateral_for,
        )
        client = PeerClient("storage", self.address, credentials, verifier, timeout=CLIENT_TIMEOUT)
        # In TLS 1.3 the client's handshake is over before the server judges its
        # certificate: the refusal reaches it as the server's alert, or, when the server
        # has already closed, as a broken pipe on sending the request.
        with client, pytest.raises((RefusedByPeer, TransportError)):
            client.call("keys")
        return self.server_refusal()

    def server_refusal(self) -> Exception:
        # Storage's thread records its refusal after sending the alert the client saw.
        assert wait_until(lambda: self.refusals)
        assert len(self.refusals) == 1
        return self.refusals[0]


@pytest.fixture
def storage(runtimes: RuntimeFactory, monkeypatch: pytest.MonkeyPatch) -> Victim:  # noqa: F811
    refusals = record_raised(monkeypatch, server_module, "handshake")
    runtime = runtimes("storage")
    return Victim(runtime, runtime.start(), refusals)


def rejected_reason(refusal: Exception) -> Exception:
    """The check's own error inside the server's ``PeerRejected``."""
    assert isinstance(refusal, PeerRejected)
    return refusal.reason


# Peers whose attested identity the manifest does not accept.


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"mr_enclave": b"\x01" * 32}, f"mr_enclave {'01' * 8}"),
        ({"mr_signer": b"\x02" * 32}, f"mr_signer {'02' * 8}"),
        ({"isv_prod_id": 99}, "isv_prod_id 99 != 2"),
        ({"isv_svn": 0}, "isv_svn 0 < min_isv_svn 1"),
    ],
    ids=["wrong-mrenclave", "wrong-mrsigner", "wrong-isv-prod-id", "isv-svn-below-minimum"],
)
def test_an_enclave_the_manifest_does_not_accept_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
    change: dict[str, Any],
    named: str,
) -> None:
    impostor = attrs.evolve(frontend_identity, **change)
    reason = rejected_reason(storage.refusal_of(enclave(platform, impostor, storage.in_force)))
    assert isinstance(reason, IdentityNotAccepted)
    assert named in str(reason)
    assert requests_read == []


def test_a_debug_enclave_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
) -> None:
    debug_build = attrs.evolve(frontend_identity, debug=True)
    reason = rejected_reason(storage.refusal_of(enclave(platform, debug_build, storage.in_force)))
    assert isinstance(reason, PolicyRejected)
    assert reason.check == "debug"
    assert requests_read == []


def test_a_valid_enclave_not_inbound_is_refused_by_the_server(
    storage: Victim,
    platform: SimulatedPlatform,
    deployment: SimulatedDeployment,  # noqa: F811
    requests_read: list[Any],
) -> None:
    client_app = enclave(platform, deployment.images["client"].identity, storage.in_force)
    reason = rejected_reason(storage.refusal_of(client_app))
    assert isinstance(reason, IdentityNotAccepted)
    assert "it is the manifest's 'client', which is not allowed on this edge" in str(reason)
    assert requests_read == []


def test_a_client_that_reached_another_service_refuses_it(
    runtimes: RuntimeFactory,  # noqa: F811
    requests_read: list[Any],
) -> None:
    """frontend means to call storage, but its peer address leads to the kms (a valid
    enclave, which would accept frontend): frontend refuses before sending anything."""
    kms_address = runtimes("kms").start()
    requests_read.clear()  # its owner's requests putting the secrets in
    frontend = runtimes("frontend", storage=kms_address, authentication=kms_address)
    with pytest.raises(PeerRejected) as caught:
        frontend.context.client("storage").call("keys")
    assert isinstance(caught.value.reason, IdentityNotAccepted)
    assert "it is the manifest's 'kms', which is not allowed on this edge" in str(caught.value)
    assert requests_read == []


# Certificates whose evidence does not hold together.


@pytest.mark.parametrize("extension", ["legacy", "tcg", "tcg-claims-rewritten"])
def test_a_quote_replayed_under_another_key_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
    extension: str,
) -> None:
    """The attacker copies the evidence of a genuine frontend certificate into a
    certificate of its own key (for TCG, verbatim or with claims naming its key)."""
    stolen = extract_evidence(certificate_der(enclave(platform, frontend_identity, storage.in_force)))
    assert stolen.legacy_quote is not None and stolen.tcg_quote is not None
    assert stolen.tcg_claims is not None
    key = new_key()
    value = {
        "legacy": stolen.legacy_quote,
        "tcg": tcg_extension(stolen.tcg_quote, stolen.tcg_claims),
        "tcg-claims-rewritten": tcg_extension(stolen.tcg_quote, tcg_claims(spki_of(key))),
    }[extension]
    oid = LEGACY_QUOTE_OID if extension == "legacy" else TCG_EVIDENCE_OID
    credentials = attacker_credentials(key, craft_certificate(key, [(oid, value)]))
    reason = rejected_reason(storage.refusal_of(credentials))
    assert isinstance(reason, EvidenceError)
    assert reason.check == "report_data_binding"
    assert requests_read == []


def test_a_certificate_without_quote_is_refused(storage: Victim, requests_read: list[Any]) -> None:
    key = new_key()
    reason = rejected_reason(storage.refusal_of(attacker_credentials(key, craft_certificate(key, []))))
    assert isinstance(reason, EvidenceError)
    assert reason.check == "no_quote"
    assert requests_read == []


@pytest.mark.parametrize(
    ("layout", "check"),
    [("two-legacy", "duplicate_extension"), ("legacy-and-tcg-disagree", "evidence_mismatch")],
    ids=["two-legacy", "legacy-and-tcg-disagree"],
)
def test_a_duplicated_quote_extension_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    deployment: SimulatedDeployment,  # noqa: F811
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
    layout: str,
    check: str,
) -> None:
    """Two quotes where one is expected: verifiers reading different ones would see
    different enclaves (here the TCG one is the client app's)."""
    key = new_key()
    legacy = (LEGACY_QUOTE_OID, legacy_quote(platform, frontend_identity, key))
    second = (
        legacy
        if layout == "two-legacy"
        else (TCG_EVIDENCE_OID, tcg_evidence(platform, deployment.images["client"].identity, key))
    )
    credentials = attacker_credentials(key, craft_certificate(key, [legacy, second]))
    reason = rejected_reason(storage.refusal_of(credentials))
    assert isinstance(reason, EvidenceError)
    assert reason.check == check
    assert requests_read == []


@pytest.mark.parametrize("what", ["extension", "certificate"])
def test_an_oversized_extension_or_certificate_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
    what: str,
) -> None:
    key = new_key()
    quote = legacy_quote(platform, frontend_identity, key)
    extensions = (
        [(LEGACY_QUOTE_OID, quote + bytes(MAX_EXTENSION))]
        if what == "extension"  # each padding extension below the limit, together above
        else [(LEGACY_QUOTE_OID, quote)]
        + [(f"1.2.3.{i}", bytes(MAX_CERTIFICATE // 3)) for i in range(3)]
    )
    credentials = attacker_credentials(key, craft_certificate(key, extensions))
    reason = rejected_reason(storage.refusal_of(credentials))
    assert isinstance(reason, EvidenceError)
    assert reason.check == f"oversized_{what}"
    assert requests_read == []


@pytest.mark.parametrize("when", ["expired", "not-yet-valid"])
def test_a_certificate_outside_its_validity_is_refused(
    storage: Victim,
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    requests_read: list[Any],
    when: str,
) -> None:
    """A genuine frontend certificate, but issued for another time."""
    key = new_key()
    shift = dt.timedelta(hours=-2 if when == "expired" else 2)
    certificate = create_ratls_certificate(
        key,
        SimulatedAttester(platform, frontend_identity).quote,
        common_name="frontend",
        now=dt.datetime.now(dt.UTC) + shift,
        lifetime=dt.timedelta(hours=1),
        manifest=storage.in_force(),
    )
    reason = rejected_reason(storage.refusal_of(attacker_credentials(key, certificate)))
    assert isinstance(reason, EvidenceError)
    assert reason.check == "certificate_validity"
    assert requests_read == []


# The TLS layer.


def assert_refused_in_the_handshake(
    storage: Victim, context: SSL.Context, check: str, requests_read: list[Any]
) -> None:
    """A raw client with ``context`` gets no byte back, the server reads no request and
    counts a refusal (not a dropped line) for ``check``."""
    assert raw_client_exchange(storage.address, context) == b""
    assert requests_read == []
    refusal = storage.server_refusal()
    assert isinstance(refusal, PeerRejected)
    assert refusal.check == check
    server = storage.runtime.server
    assert server is not None
    assert wait_until(lambda: server.rejections == 1)


def test_a_client_without_certificate_is_refused(storage: Victim, requests_read: list[Any]) -> None:
    context = raw_context(SSL.TLS_CLIENT_METHOD, certificate=False)
    assert_refused_in_the_handshake(storage, context, "no_peer_certificate", requests_read)


def test_a_client_offering_only_tls_1_2_is_refused(
    storage: Victim, requests_read: list[Any]
) -> None:
    context = raw_context(SSL.TLS_CLIENT_METHOD, max_version=SSL.TLS1_2_VERSION)
    assert_refused_in_the_handshake(storage, context, "tls_version", requests_read)


def test_a_server_offering_only_tls_1_2_is_refused(
    runtimes: RuntimeFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The recording server of the guarantees tests, limited to TLS 1.2.
    monkeypatch.setattr(
        guarantees,
        "raw_context",
        functools.partial(raw_context, max_version=SSL.TLS1_2_VERSION),
    )
    downgrader = RecordingServer()
    frontend = runtimes("frontend", storage=downgrader.address, authentication=downgrader.address)
    with pytest.raises(RefusedByPeer, match="protocol version"):
        frontend.context.client("storage").call("keys")
    downgrader.thread.join(timeout=10)
    assert bytes(downgrader.received) == b""


def test_a_server_certificate_swapped_after_the_check_is_refused(
    storage: Victim,
    runtimes: RuntimeFactory,  # noqa: F811
    platform: SimulatedPlatform,
    frontend_identity: SgxIdentity,
    monkeypatch: pytest.MonkeyPatch,
    requests_read: list[Any],
) -> None:
    """The certificate the verify callback approved is not the one the session ends with
    (a TLS stack that let the peer change it, simulated at the session's accessor)."""
    checked = certificate_der(storage.runtime.credentials)
    swapped_in = crypto.X509.from_cryptography(
        enclave(platform, frontend_identity, storage.in_force).current().certificate
    )
    original = SSL.Connection.get_peer_certificate

    def swapped(connection: SSL.Connection) -> crypto.X509 | None:
        presented = original(connection)
        is_storage = (
            presented is not None
            and crypto.dump_certificate(crypto.FILETYPE_ASN1, presented) == checked
        )
        return swapped_in if is_storage else presented

    monkeypatch.setattr(SSL.Connection, "get_peer_certificate", swapped)
    frontend = runtimes("frontend", storage=storage.address, authentication=storage.address)
    with pytest.raises(PeerRejected, match="changed after verification") as caught:
        frontend.context.client("storage").call("keys")
    assert isinstance(caught.value.reason, TransportError)
    assert requests_read == []
