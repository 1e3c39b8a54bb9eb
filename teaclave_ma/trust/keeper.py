"""Loads the runtime manifest from disk, persists the highest accepted version, keeps the last good.

This is the I/O shell around ``ManifestTrust``: it reads files, hands the bytes to the
pure verifier, and records the accepted version atomically so that a restarted service
still refuses a rollback. A reload that fails leaves the manifest in force untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import MAX_MANIFEST_BYTES
from teaclave_ma.formats.signature import read_signature_dir
from teaclave_ma.formats.strict import read_bounded
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.trust.manifest_trust import (
    AcceptedVersion,
    ManifestRejected,
    ManifestTrust,
    VerifiedManifest,
)

log = logging.getLogger(__name__)


class VersionStateError(InputError):
    """The persisted accepted-version file is unreadable (refuse rather than forget rollbacks)."""


def load_accepted(path: Path) -> AcceptedVersion | None:
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_bytes())
        return AcceptedVersion(int(document["version"]), str(document["sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise VersionStateError(str(path), f"corrupt accepted-version state ({exc})") from exc


def save_accepted(path: Path, accepted: AcceptedVersion) -> None:
    atomic_write(
        path, json.dumps({"version": accepted.version, "sha256": accepted.sha256}).encode() + b"\n"
    )


class ManifestKeeper:
    """The manifest a running service enforces, reloadable at any time from the same paths."""

    def __init__(
        self,
        trust: ManifestTrust,
        manifest_path: Path,
        signatures_dir: Path,
        state_path: Path | None = None,
    ) -> None:
        self._trust = trust
        self._manifest_path = Path(manifest_path)
        self._signatures_dir = Path(signatures_dir)
        self._state_path = state_path
        self._lock = threading.Lock()
        if state_path is not None:
            trust.highest = load_accepted(state_path)

    def load(self, now: dt.datetime | None = None) -> VerifiedManifest:
        """Read and verify the files; on success make them current. Raises on any failure."""
        now = now or dt.datetime.now(dt.UTC)
        manifest_bytes = read_bounded(self._manifest_path, MAX_MANIFEST_BYTES)
        signatures = read_signature_dir(self._signatures_dir)
        with self._lock:
            verified = self._trust.check(manifest_bytes, signatures, now)
            highest = self._trust.highest
            if self._state_path is not None and (
                highest is None or verified.version >= highest.version
            ):
                save_accepted(self._state_path, verified.accepted)
            self._trust.commit(verified)
        log.info(
            "manifest v%d accepted (signed by %s; expires %s)",
            verified.version,
            ", ".join(verified.signer_names),
            verified.manifest.expires.isoformat(),
        )
        return verified

    def reload(self, now: dt.datetime | None = None) -> bool:
        """Try to replace the manifest; a rejected one never replaces the one in force."""
        try:
            self.load(now)
        except (ManifestRejected, InputError, OSError) as exc:
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
        with self._lock:
            return self._trust.require_current(now or dt.datetime.now(dt.UTC))

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
