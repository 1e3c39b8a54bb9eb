"""What a service keeps across restarts, sealed to its enclave identity, and the trusted
clock that never reads earlier than the newest time the service has evidence for.

The state is the highest accepted manifest (version and digest) and the time floor. It is
sealed with AES-256-GCM under a key derived from the attester's sealing key (EGETKEY's,
MRENCLAVE or MRSIGNER policy), with the format, the service name, the key policy and the
ISV SVN the key was asked for as associated data: a file that was changed, sealed by another
enclave or for another service, does not unseal. Sans-IO: bytes in, bytes out; the keeper
reads and writes the file.

Sealing cannot tell an older sealed file copied back from the current one (SGX2 and Gramine
offer no monotonic counter); the signed ``issued`` time of the manifest, the collateral the
service verified and the time floor bound how far such a replay can take it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from teaclave_ma.attestation.attester import Attester, SealingPolicy, SealingUnavailable
from teaclave_ma.errors import ConfigError, InputError, VerificationError
from teaclave_ma.formats.strict import expect_utc_time, format_utc
from teaclave_ma.trust.manifest_trust import AcceptedVersion

log = logging.getLogger(__name__)

STATE_KIND = "service state"
SEALED_FORMAT = "teaclave-ma sealed service state v1"
UNSEALED_FORMAT = "teaclave-ma unsealed service state v1"
MAX_STATE_BYTES = 64 << 10
NONCE_SIZE = 12
# Nothing trusted yet: the floor of a state that was just initialized.
NO_FLOOR = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The floor is resealed once it has moved this far past the sealed one: a write per minute
# at most, however many handshakes read the clock, at the price of a restarted service
# trusting a floor up to this much older than the last time it read.
RESEAL_AFTER = dt.timedelta(minutes=1)
# A reading this much behind the floor still passes: concurrent readers, NTP slewing and a
# few seconds of skew between the auditors' machines and this one are no attack.
CLOCK_TOLERANCE = dt.timedelta(minutes=1)


class StateRefused(VerificationError):
    """The service's kept state cannot be trusted; the service must not start on it."""


class StateMissing(StateRefused):
    """No state where one must be: deleted, or the state directory was redirected."""


class StateExists(StateRefused):
    """``--initialize-state`` over an existing state: never a silent reset."""


class StateTampered(StateRefused):
    """A state file that does not unseal or is malformed: changed, or sealed by another
    enclave."""


class StateNotOurs(StateRefused):
    """A well-formed state file of another service, key policy or a newer build."""


class ClockBehindFloor(VerificationError):
    """The host's clock reads earlier than the newest time this service has evidence for."""

    def __init__(self, now: dt.datetime, floor: dt.datetime, source: str) -> None:
        self.now, self.floor, self.source = now, floor, source
        super().__init__(
            "clock",
            f"the host clock reads {format_utc(now)}, earlier than this service's trusted "
            f"time floor {format_utc(floor)} ({source}); refusing, since a clock set back "
            "would revive expired manifests, certificates and collateral",
        )


@attrs.frozen
class ServiceState:
    accepted: AcceptedVersion | None
    floor: dt.datetime

    def to_document(self) -> dict[str, Any]:
        accepted = self.accepted
        return {
            "accepted": None
            if accepted is None
            else {"version": accepted.version, "sha256": accepted.sha256},
            "floor": format_utc(self.floor),
        }

    @classmethod
    def from_document(cls, document: object) -> ServiceState:
        """Raises ValueError, KeyError or TypeError on anything else."""
        if not isinstance(document, dict) or set(document) != {"accepted", "floor"}:
            raise ValueError("expected exactly the keys accepted and floor")
        accepted = document["accepted"]
        if accepted is not None:
            version, digest = accepted["version"], accepted["sha256"]
            if type(version) is not int or not isinstance(digest, str):
                raise TypeError("accepted: expected an integer version and a digest string")
            accepted = AcceptedVersion(version, digest)
        try:
            floor = expect_utc_time(document["floor"], "floor")
        except InputError as exc:
            raise ValueError(str(exc)) from exc
        return cls(accepted, floor)


def _formats(kind: str) -> tuple[str, str]:
    return f"teaclave-ma sealed {kind} v1", f"teaclave-ma unsealed {kind} v1"


def _associated_data(
    sealed_format: str, service: str, policy: SealingPolicy, isv_svn: int
) -> bytes:
    return json.dumps([sealed_format, service, policy.value, isv_svn]).encode()


class StateSealer:
    """Seals and unseals one service's state with its attester's sealing key.

    ``policy`` and ``unsealed_ok`` decide whom the service trusts with its state, so they
    come from the measured service.yaml. ``isv_svn`` is the service's own: it seals under
    the key of its own SVN and, under MRSIGNER, reads states its predecessors sealed under
    lower ones (then reseals them under its own, out of reach of older builds).
    ``unsealed_ok`` admits a backend without sealing keys (TDX): the state is then kept in
    plain JSON that the host can rewrite at will, which is logged on every start.
    """

    def __init__(
        self,
        attester: Attester,
        service: str,
        isv_svn: int,
        *,
        policy: SealingPolicy = SealingPolicy.MRSIGNER,
        unsealed_ok: bool = False,
    ) -> None:
        self.service = service
        self.policy = policy
        self._attester = attester
        self._isv_svn = isv_svn
        self._keys: dict[int, AESGCM] = {}
        try:
            self._keys[isv_svn] = self._derive(attester.sealing_key(policy))
        except SealingUnavailable as exc:
            if not unsealed_ok:
                raise ConfigError(
                    "state.unsealed_ok",
                    f"{exc}; this service does not admit an unsealed state",
                ) from exc
            log.warning(
                "%s keeps its state UNSEALED (%s): the host can rewrite which manifest it "
                "accepted and its time floor",
                service,
                exc,
            )
        self.sealed = bool(self._keys)

    def _derive(self, sealing_key: bytes) -> AESGCM:
        # A key of its own for this purpose, never the raw sealing key.
        info = b"teaclave-ma service state\0" + self.service.encode()
        return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(sealing_key))

    def _key(self, isv_svn: int) -> AESGCM:
        if isv_svn not in self._keys:
            self._keys[isv_svn] = self._derive(self._attester.sealing_key(self.policy, isv_svn))
        return self._keys[isv_svn]

    def seal(self, state: ServiceState) -> bytes:
        return self.seal_document(STATE_KIND, state.to_document())

    def unseal(self, data: bytes, where: str) -> ServiceState:
        return self._read(lambda: self.unseal_document(data, where, STATE_KIND), where)

    def seal_document(self, kind: str, document: object) -> bytes:
        """A JSON document sealed as ``kind`` (the service state, the kms's secrets): the
        kind is associated data, so one kind's file never unseals as another's."""
        sealed_format, unsealed_format = _formats(kind)
        if not self.sealed:
            envelope: dict[str, object] = {"format": unsealed_format, "service": self.service}
            return json.dumps({**envelope, "state": document}).encode() + b"\n"
        nonce = secrets.token_bytes(NONCE_SIZE)
        plaintext = json.dumps(document).encode()
        ciphertext = self._key(self._isv_svn).encrypt(
            nonce,
            plaintext,
            _associated_data(sealed_format, self.service, self.policy, self._isv_svn),
        )
        envelope = {
            "format": sealed_format,
            "service": self.service,
            "policy": self.policy.value,
            "isv_svn": self._isv_svn,
            "nonce": nonce.hex(),
            "sealed": ciphertext.hex(),
        }
        return json.dumps(envelope).encode() + b"\n"

    def unseal_document(self, data: bytes, where: str, kind: str) -> object:
        sealed_format, unsealed_format = _formats(kind)
        try:
            envelope = json.loads(data)
            found, service = envelope["format"], envelope["service"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StateTampered("state_format", f"{where}: not a {kind} ({exc!r})") from exc
        if service != self.service:
            raise StateNotOurs(
                "state_service", f"{where}: the state of service {service!r}, not {self.service!r}"
            )
        if found == unsealed_format and not self.sealed:
            try:
                return envelope["state"]
            except KeyError as exc:
                raise StateTampered("state_format", f"{where}: malformed {kind} ({exc!r})") from exc
        if found == unsealed_format:
            raise StateTampered(
                "state_unsealed",
                f"{where}: an unsealed state, but this enclave seals its state; anyone "
                "outside the enclave could have written it",
            )
        if found != sealed_format:
            raise StateTampered("state_format", f"{where}: unknown format {found!r}")
        if not self.sealed:
            raise StateNotOurs(
                "state_sealed", f"{where}: a sealed state, and this backend has no sealing key"
            )
        try:
            return self._open(envelope, where, sealed_format)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StateRefused):
                raise
            raise StateTampered("state_format", f"{where}: malformed {kind} ({exc!r})") from exc

    def _open(self, envelope: dict[str, Any], where: str, sealed_format: str) -> object:
        policy, isv_svn = envelope["policy"], envelope["isv_svn"]
        if policy != self.policy.value:
            raise StateNotOurs(
                "state_policy",
                f"{where}: sealed under key policy {policy!r}; this service seals to "
                f"{self.policy.value!r}",
            )
        if type(isv_svn) is not int or not 0 <= isv_svn <= 0xFFFF:
            raise StateTampered("state_format", f"{where}: isv_svn {isv_svn!r} is not a u16")
        if isv_svn > self._isv_svn:
            raise StateNotOurs(
                "state_downgrade",
                f"{where}: sealed by a newer build (ISV SVN {isv_svn}) than this one "
                f"({self._isv_svn}); an older build never reads a newer one's state",
            )
        if self.policy is SealingPolicy.MRENCLAVE:
            isv_svn = self._isv_svn  # the build fixes its SVN; the key names no other
        try:
            plaintext = self._key(isv_svn).decrypt(
                bytes.fromhex(envelope["nonce"]),
                bytes.fromhex(envelope["sealed"]),
                _associated_data(sealed_format, self.service, self.policy, isv_svn),
            )
        except InvalidTag:
            raise StateTampered(
                "state_unseal",
                f"{where}: does not unseal: it was changed, or sealed by another enclave "
                f"(key policy {self.policy.value})",
            ) from None
        return json.loads(plaintext)

    def _read(self, document: Callable[[], object], where: str) -> ServiceState:
        try:
            return ServiceState.from_document(document())
        except (ValueError, KeyError, TypeError) as exc:
            raise StateTampered(
                "state_format", f"{where}: malformed service state ({exc!r})"
            ) from exc


Persist = Callable[[dt.datetime], None]


class TrustedClock:
    """The current time, never earlier than the service's time floor.

    The floor is the newest time the service has trusted evidence for: the one sealed in
    its state, the signed ``issued`` time of the manifests it accepted, the issue times of
    the collateral it verified, and its own earlier readings. It only moves forward, and it
    is handed to ``persist`` (to be sealed) whenever it has moved ``RESEAL_AFTER`` beyond
    what was last persisted. A reading more than ``CLOCK_TOLERANCE`` behind the floor is
    refused with ``ClockBehindFloor``. Thread-safe; callable like any clock.
    """

    def __init__(
        self,
        floor: dt.datetime,
        persist: Persist,
        source: Callable[[], dt.datetime] | None = None,
        *,
        floor_source: str = "sealed in this service's state",
    ) -> None:
        self._floor, self._why = floor, floor_source
        self._persisted = floor
        self._persist = persist
        self._source = source or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()

    @property
    def floor(self) -> dt.datetime:
        return self._floor

    def __call__(self) -> dt.datetime:
        with self._lock:
            now = self._source()
            self._check(now)
            self._advance(now, "this service's own earlier reading of the clock")
            return now

    def witness(self, moment: dt.datetime, source: str) -> None:
        """Trusted evidence that real time has reached ``moment`` (a signed time);
        raises ``ClockBehindFloor`` if the clock now reads earlier."""
        with self._lock:
            self._advance(moment, source)
            self._check(self._source())

    def _check(self, now: dt.datetime) -> None:
        if now < self._floor - CLOCK_TOLERANCE:
            raise ClockBehindFloor(now, self._floor, self._why)

    def _advance(self, moment: dt.datetime, source: str) -> None:
        if moment <= self._floor:
            return
        self._floor, self._why = moment, source
        if moment - self._persisted >= RESEAL_AFTER:
            self._persist(moment)
            self._persisted = moment
