"""Loads the runtime manifest from disk, keeps the highest accepted version sealed, keeps the last good.

This is the I/O shell around ``ManifestTrust`` and the sealed state: it reads files, hands
the bytes to the pure verifier, and records the accepted version (and the time floor)
sealed and atomically, so that a restarted service still refuses a rollback. A reload that
fails leaves the manifest in force untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from teaclave_ma.errors import InputError, VerificationError
from teaclave_ma.formats.manifest import MAX_MANIFEST_BYTES
from teaclave_ma.formats.signature import read_signature_dir
from teaclave_ma.formats.strict import read_bounded
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.trust.manifest_trust import AcceptedVersion, ManifestTrust, VerifiedManifest
from teaclave_ma.trust.sealed_state import (
    MAX_STATE_BYTES,
    NO_FLOOR,
    ServiceState,
    StateExists,
    StateMissing,
    StateSealer,
    StateTampered,
    TrustedClock,
)

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Signatures = list[tuple[str, bytes]]  # (file name, content), as read_signature_dir gives them


class ManifestFilesChanging(InputError):
    """The manifest files kept changing while they were read."""


# A ConfigMap update settles in milliseconds; a host that keeps swapping only delays a reload.
_READ_ATTEMPTS = 5


class StateFile:
    """A service's sealed state on disk (in the host-chosen state_dir; its content is
    sealed). Every change is sealed and written atomically before it takes effect."""

    def __init__(self, path: Path, sealer: StateSealer, state: ServiceState) -> None:
        self.path = path
        self._sealer = sealer
        self._state = state
        self._lock = threading.Lock()
        self._forward: Callable[[dt.datetime], None] | None = None

    @classmethod
    def open(cls, path: Path, sealer: StateSealer, *, initialize: bool = False) -> StateFile:
        """The state at ``path``. A first start says so with ``initialize`` (and gets an
        empty state); otherwise a missing state is refused, never read as "nothing
        accepted yet", and with ``initialize`` an existing one is refused too."""
        path = Path(path)
        if initialize:
            kept = cls(path, sealer, ServiceState(None, NO_FLOOR))
            try:
                atomic_write(path, sealer.seal(kept.state), mode=0o600, overwrite=False)
            except FileExistsError:
                raise StateExists(
                    "state_exists",
                    f"{path} already holds {sealer.service}'s state; --initialize-state is for "
                    "the first start only and never replaces a state",
                ) from None
            log.warning(
                "%s: initialized a new %s state at %s: no manifest accepted yet, no time floor",
                sealer.service,
                "sealed" if sealer.sealed else "UNSEALED",
                path,
            )
            return kept
        try:
            data = read_bounded(path, MAX_STATE_BYTES)
        except FileNotFoundError:
            raise StateMissing(
                "state_missing",
                f"no state at {path}: pass --initialize-state on {sealer.service}'s first "
                "start only; on any later start a missing state means it was deleted or the "
                "state directory moved, and accepting that would allow a rollback",
            ) from None
        except InputError as exc:
            raise StateTampered("state_format", str(exc)) from exc
        state = sealer.unseal(data, str(path))
        log.info(
            "%s: state from %s: %s, time floor %s",
            sealer.service,
            path,
            f"manifest v{state.accepted.version} accepted"
            if state.accepted
            else "nothing accepted",
            state.floor.isoformat(),
        )
        kept = cls(path, sealer, state)
        kept._write(state)  # resealed under this build's key (an upgrade moves it forward)
        return kept

    @property
    def state(self) -> ServiceState:
        return self._state

    def update(
        self, *, accepted: AcceptedVersion | None = None, floor: dt.datetime | None = None
    ) -> None:
        with self._lock:
            state = ServiceState(
                accepted or self._state.accepted,
                max(floor, self._state.floor) if floor is not None else self._state.floor,
            )
            if self._forward is None:
                self._write(state)
                return
            self._state = state
            if floor is not None:
                self._forward(state.floor)

    def forward_to(self, owner: Callable[[dt.datetime], None]) -> None:
        """From now on this copy writes nothing: a worker process hands its time floor to
        ``owner`` (the parent, which alone writes the file, so N workers never race on it).
        The accepted version is not forwarded: the parent accepted it before any worker."""
        with self._lock:
            self._forward = owner

    def _write(self, state: ServiceState) -> None:
        atomic_write(self.path, self._sealer.seal(state), mode=0o600)
        self._state = state

    def clock(self, source: Clock | None = None) -> TrustedClock:
        """A clock enforcing this state's time floor, sealing it here as it advances;
        ``source`` is the host's clock it reads (the system's unless given)."""
        return TrustedClock(self._state.floor, lambda floor: self.update(floor=floor), source)


class ManifestKeeper:
    """The manifest a running service enforces, reloadable at any time from the same paths."""

    def __init__(
        self,
        trust: ManifestTrust,
        manifest_path: Path,
        signatures_dir: Path,
        state: StateFile | None = None,
        *,
        clock_source: Clock | None = None,
    ) -> None:
        """With ``state``, the accepted version is kept there and time comes from its
        trusted clock (reading ``clock_source``); without, nothing survives the process
        and time is the host's."""
        self._trust = trust
        self._manifest_path = Path(manifest_path)
        self._signatures_dir = Path(signatures_dir)
        self._state = state
        self._lock = threading.Lock()
        # The bytes of the manifest in force and its signatures, for the worker processes.
        self.source: tuple[bytes, Signatures] | None = None
        self.clock: TrustedClock | None = None
        if state is not None:
            trust.highest = state.state.accepted
            self.clock = state.clock(clock_source)

    def forward_state_to(self, owner: Callable[[dt.datetime], None]) -> None:
        """In a worker process: write no state, hand time floors to ``owner`` (the parent)."""
        if self._state is not None:
            self._state.forward_to(owner)

    def _now(self) -> dt.datetime:
        return self.clock() if self.clock is not None else dt.datetime.now(dt.UTC)

    def load(self, now: dt.datetime | None = None) -> VerifiedManifest:
        """Read and verify the files; on success make them current. Raises on any failure."""
        manifest_bytes, signatures = self._read_one_generation()
        return self.adopt(manifest_bytes, signatures, now)

    def adopt(
        self, manifest_bytes: bytes, signatures: Signatures, now: dt.datetime | None = None
    ) -> VerifiedManifest:
        """Verify a manifest and its signatures given as bytes (read by ``load``, or sent by
        the parent to a worker); on success make it current. Raises on any failure."""
        now = now or self._now()
        with self._lock:
            verified = self._trust.check(manifest_bytes, signatures, now)
            issued = verified.manifest.issued
            if self.clock is not None and issued is not None:
                # Signed by the auditors: real time has reached it, whatever the host says.
                self.clock.witness(issued, f"manifest v{verified.version}'s signed issued time")
            highest = self._trust.highest
            if self._state is not None and (highest is None or verified.version >= highest.version):
                self._state.update(accepted=verified.accepted)
            self._trust.commit(verified)
            self.source = (manifest_bytes, signatures)
        log.info(
            "manifest v%d accepted (signed by %s; expires %s)",
            verified.version,
            ", ".join(verified.signer_names),
            verified.manifest.expires.isoformat(),
        )
        return verified

    def _read_one_generation(self) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The manifest and the signatures as of one state of the files.

        The two are read one after the other, so a replacement in between (a kubelet
        swapping a ConfigMap's ``..data`` link, an operator copying new files) would pair
        one generation's manifest with another's signatures: a spurious rejection that the
        watcher, having seen the new fingerprint, would never retry. The fingerprint stats
        through the links (a new generation's files are new inodes, written before the
        old ones go), so equal fingerprints before and after the reads mean one generation."""
        for _ in range(_READ_ATTEMPTS):
            before = self.fingerprint()
            manifest_bytes = read_bounded(self._manifest_path, MAX_MANIFEST_BYTES)
            signatures = read_signature_dir(self._signatures_dir)
            if self.fingerprint() == before:
                return manifest_bytes, signatures
            log.info("the manifest files changed while being read; reading them again")
        raise ManifestFilesChanging(
            str(self._manifest_path),
            f"the manifest or the signatures in {self._signatures_dir} changed during each of "
            f"{_READ_ATTEMPTS} reads; no consistent pair to verify",
        )

    def reload(self, now: dt.datetime | None = None) -> bool:
        """Try to replace the manifest; a rejected one never replaces the one in force."""
        try:
            self.load(now)
        except (VerificationError, InputError, OSError) as exc:
            current = self._trust.current
            kept = f"v{current.version}" if current else "none"
            log.error(
                "manifest reload from %s with signatures in %s rejected, keeping %s in force: %s",
                self._manifest_path,
                self._signatures_dir,
                kept,
                exc,
            )
            return False
        return True

    def current(self, now: dt.datetime | None = None) -> VerifiedManifest:
        now = now or self._now()
        with self._lock:
            return self._trust.require_current(now)

    def in_force(self) -> AcceptedVersion:
        """The version and digest of the manifest loaded, for our certificate's claim;
        unlike ``current`` it holds while that manifest is expired or superseded, so peers
        still learn which one this service has (and refuse it with that reason)."""
        with self._lock:
            return self._trust.loaded().accepted

    def check_peer(
        self, service: str, claimed: AcceptedVersion, now: dt.datetime | None = None
    ) -> None:
        """``ManifestTrust.check_peer`` on the manifest in force."""
        now = now or self._now()
        with self._lock:
            self._trust.check_peer(service, claimed, now)

    def fingerprint(self) -> tuple[object, ...]:
        """Changes when the manifest or any signature file changes (cheap: stat only)."""
        paths = [self._manifest_path, *sorted(self._signatures_dir.glob("*.sig"))]
        stamps: list[object] = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                stamps.append((str(path), None))
                continue
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stamps)
