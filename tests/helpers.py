"""Small helpers shared by test modules."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import teaclave_ma.rpc.server as server_module
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.formats import der
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.transport.credentials import FixedCredentials, TlsCredentials
from teaclave_ma.transport.evidence import TCG_EVIDENCE_TAG, tcg_claims


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    """Run the CLI in-process; the exit code and the ``--json`` object (empty without one)."""
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.lstrip().startswith("{") else {}


# RA-TLS certificates made by hand, for attacks on the evidence they carry.

# (oid, value) or (oid, value, critical)
RawExtension = tuple[str, bytes] | tuple[str, bytes, bool]
CRAFTED_LIFETIME = dt.timedelta(hours=1)


def spki_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def legacy_quote(
    platform: SimulatedPlatform, identity: SgxIdentity, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """A quote for ``identity`` whose report_data binds ``key`` the legacy way."""
    return platform.quote(identity, hashlib.sha256(spki_of(key)).digest() + bytes(32))


def tcg_extension(quote: bytes, claims: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(TCG_EVIDENCE_TAG, [quote, claims]))


def tcg_evidence(
    platform: SimulatedPlatform, identity: SgxIdentity, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """The TCG extension value for ``identity`` whose claims and quote bind ``key``."""
    claims = tcg_claims(spki_of(key))
    return tcg_extension(
        platform.quote(identity, hashlib.sha256(claims).digest() + bytes(32)), claims
    )


def craft_certificate(
    key: ec.EllipticCurvePrivateKey,
    extensions: Sequence[RawExtension],
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    edit_tbs: Callable[[list[bytes]], list[bytes]] | None = None,
) -> bytes:
    """A certificate self-signed by ``key`` holding exactly ``extensions``, in order;
    ``edit_tbs`` may then change the encoded TBS fields before signing.

    cryptography refuses duplicate extensions, so they are spliced in at the DER level."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")])
    base = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + CRAFTED_LIFETIME)
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    outer = read_single(base)
    tbs, algorithm = outer.children()[:2]
    fields = [f.encoded() for f in tbs.children()]
    items = [_extension_der(*extension) for extension in extensions]
    if items:
        fields.append(der.encode_tlv(0xA3, der.encode_sequence(*items)))
    new_tbs = der.encode_sequence(*(edit_tbs(fields) if edit_tbs else fields))
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return der.encode_sequence(
        new_tbs, algorithm.encoded(), der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + signature)
    )


def _extension_der(oid: str, value: bytes, critical: bool = False) -> bytes:
    flag = [der.encode_tlv(0x01, b"\xff")] if critical else []  # DER BOOLEAN TRUE
    return der.encode_sequence(
        der.encode_oid(oid), *flag, der.encode_tlv(der.TAG_OCTET_STRING, value)
    )


def attacker_credentials(
    key: ec.EllipticCurvePrivateKey, certificate_der: bytes
) -> FixedCredentials:
    """Credentials that always present one given certificate (an attacker's)."""
    return FixedCredentials(TlsCredentials(key, x509.load_der_x509_certificate(certificate_der)))


class MovableClock:
    """A clock the test moves: certificates expire exactly when the test says, however
    slow the machine."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def record_raised(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[Exception]:
    """Every exception ``owner.name(...)`` raises from now on (it still raises them): for
    instance the typed reason behind a handshake that a server refused."""
    raised: list[Exception] = []
    original = getattr(owner, name)

    def recording(*args: object, **kwargs: object) -> object:
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(owner, name, recording)
    return raised


def record_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every HTTP request any RPC server in this process reads from now on."""
    seen: list[Any] = []
    original = server_module.read_message

    def spy(*args: Any, **kwargs: Any) -> Any:
        message = original(*args, **kwargs)
        if message is not None:  # None: the peer closed without a request
            seen.append(message)
        return message

    monkeypatch.setattr(server_module, "read_message", spy)
    return seen


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (for what another thread does after the test's
    own call returned); False if it never did."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class PeakMemory:
    bytes = 0


@contextlib.contextmanager
def traced_peak_memory() -> Iterator[PeakMemory]:
    """The peak of Python allocations inside the block, in ``.bytes`` once it has ended
    (also when it raised): to show an input was refused without being read whole."""
    result = PeakMemory()
    tracemalloc.start()
    try:
        yield result
    finally:
        result.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def copy_manifest(manifest: Path, signatures: Path, into: Path) -> tuple[Path, Path]:
    """The same signed manifest in another directory: a second service holds these bytes,
    and its file watch does not see the first one's files change."""
    into.mkdir(parents=True)
    shutil.copytree(signatures, into / signatures.name)
    return Path(shutil.copy2(manifest, into / manifest.name)), into / signatures.name


@attrs.frozen
class Tlv:
    """A DER element, for tests that take encodings apart and put them back together."""

    tag: int
    value: bytes

    def encoded(self) -> bytes:
        return der.encode_tlv(self.tag, self.value)

    def children(self) -> list[Tlv]:
        return read_all(self.value)


def read_all(data: bytes) -> list[Tlv]:
    """The elements that exactly fill ``data``."""
    return [
        Tlv(tag, data[start:end]) for tag, _, start, end in der.spans(data, 0, len(data), "test")
    ]


def read_single(data: bytes) -> Tlv:
    """The one element filling all of ``data``."""
    tag, _, start, end = der.single_span(data, "test")
    return Tlv(tag, data[start:end])
