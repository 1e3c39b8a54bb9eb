"""The kms's secrets, kept sealed under its own sealing key (the sealed-state AEAD).

Two files in the kms's state directory, each sealed as a kind of its own:
``kms-secrets.sealed`` (a random store id, a generation, and per secret its version and
value; a deleted secret keeps its version and loses its value) and ``kms-store-head.sealed``
(the store id and generation last written). A change writes the store, then the head; a
store older than its head is an old copy put back by the host, and is refused. The host
can still put back an older pair of both (sealing has no monotonic counter); the owners'
per-secret versions then let an owner see it (``secrets list``).

On a backend without sealing keys (TDX guests today), nothing is written: the kms keeps its
secrets in memory only, and the owners put them again after a restart.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import threading
from pathlib import Path

import attrs

from teaclave_ma.fsutil import atomic_write
from teaclave_ma.secrets.owner import OwnerRefused, OwnerRequest, value_digest
from teaclave_ma.secrets.policy import SecretValue
from teaclave_ma.trust.sealed_state import (
    StateExists,
    StateMissing,
    StateRefused,
    StateSealer,
    StateTampered,
)

log = logging.getLogger(__name__)

STORE_KIND = "kms secrets"
HEAD_KIND = "kms store head"
STORE_FILE = "kms-secrets.sealed"
HEAD_FILE = "kms-store-head.sealed"


class StoreRolledBack(StateRefused):
    """The sealed store is older than the head sealed beside it: a replayed copy."""


@attrs.frozen
class StoredSecret:
    version: int
    value: SecretValue | None  # None: deleted (the version stays, so no request replays)


@attrs.frozen
class _Snapshot:
    store: str
    generation: int
    entries: dict[str, StoredSecret]

    def to_document(self) -> dict[str, object]:
        return {
            "store": self.store,
            "generation": self.generation,
            "secrets": {
                name: {
                    "version": entry.version,
                    "value": None
                    if entry.value is None
                    else base64.b64encode(entry.value.reveal()).decode(),
                }
                for name, entry in sorted(self.entries.items())
            },
        }

    @classmethod
    def from_document(cls, document: object, where: str) -> _Snapshot:
        try:
            if not isinstance(document, dict):
                raise TypeError("not a mapping")
            store, generation = document["store"], document["generation"]
            if not isinstance(store, str) or type(generation) is not int:
                raise TypeError("store id or generation")
            entries = {}
            for name, item in document["secrets"].items():
                version, encoded = item["version"], item["value"]
                if type(version) is not int:
                    raise TypeError("version")
                value = (
                    None
                    if encoded is None
                    else SecretValue(base64.b64decode(encoded, validate=True))
                )
                entries[str(name)] = StoredSecret(version, value)
        except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
            # never the content: it holds values
            raise StateTampered("kms_store", f"{where}: malformed ({type(exc).__name__})") from exc
        return cls(store, generation, entries)


class SecretStore:
    """What the kms holds; changed only by ``apply`` (owner requests), thread-safe."""

    def __init__(self, directory: Path, sealer: StateSealer, *, initialize: bool) -> None:
        self._store_path = Path(directory) / STORE_FILE
        self._head_path = Path(directory) / HEAD_FILE
        self._sealer = sealer
        self._lock = threading.Lock()
        if not sealer.sealed:
            log.warning(
                "%s has no sealing key: its secrets are kept in memory only and must be "
                "put again after a restart",
                sealer.service,
            )
            self._snapshot = _Snapshot(secrets.token_hex(16), 0, {})
            return
        present = [path for path in (self._store_path, self._head_path) if path.exists()]
        if initialize:
            if present:
                raise StateExists(
                    "kms_store",
                    f"{present[0]}: a kms store exists; initializing would forget its secrets",
                )
            self._snapshot = _Snapshot(secrets.token_hex(16), 0, {})
            self._write(self._snapshot)
            log.warning("%s: initialized an empty sealed secret store", sealer.service)
            return
        if len(present) < 2:
            missing = self._store_path if self._store_path not in present else self._head_path
            raise StateMissing(
                "kms_store",
                f"{missing}: missing (start with --initialize-state only the first time)",
            )
        self._snapshot = self._load()

    def _load(self) -> _Snapshot:
        store = _Snapshot.from_document(
            self._sealer.unseal_document(
                self._store_path.read_bytes(), str(self._store_path), STORE_KIND
            ),
            str(self._store_path),
        )
        head = self._sealer.unseal_document(
            self._head_path.read_bytes(), str(self._head_path), HEAD_KIND
        )
        if not isinstance(head, dict) or head.get("store") != store.store:
            raise StateTampered(
                "kms_store", f"{self._head_path}: the head of another store than {self._store_path}"
            )
        written = head.get("generation")
        if type(written) is not int:
            raise StateTampered("kms_store", f"{self._head_path}: malformed generation")
        if store.generation < written:
            raise StoreRolledBack(
                "kms_store.rollback",
                f"{self._store_path}: generation {store.generation} is older than the "
                f"{written} sealed in its head: an old copy of the store was put back",
            )
        if store.generation > written:  # a change stopped between its two writes
            self._write_head(store)
        return store

    def _write(self, snapshot: _Snapshot) -> None:
        data = self._sealer.seal_document(STORE_KIND, snapshot.to_document())
        atomic_write(self._store_path, data, mode=0o600, overwrite=True)
        self._write_head(snapshot)

    def _write_head(self, snapshot: _Snapshot) -> None:
        head = {"store": snapshot.store, "generation": snapshot.generation}
        data = self._sealer.seal_document(HEAD_KIND, head)
        atomic_write(self._head_path, data, mode=0o600, overwrite=True)

    @property
    def store_id(self) -> str:
        return self._snapshot.store

    def values(self) -> dict[str, SecretValue]:
        return {
            name: entry.value
            for name, entry in self._snapshot.entries.items()
            if entry.value is not None
        }

    def versions(self) -> dict[str, int]:
        """Every live secret's version: names and versions only, never values."""
        return {
            name: entry.version
            for name, entry in sorted(self._snapshot.entries.items())
            if entry.value is not None
        }

    def next_version(self, name: str) -> int:
        entry = self._snapshot.entries.get(name)
        return 1 if entry is None else entry.version + 1

    def apply(self, request: OwnerRequest, value: SecretValue | None) -> None:
        """Carry out a request whose signature was checked (``check_signed``)."""
        with self._lock:
            current = self._snapshot.entries.get(request.name)
            live = current is not None and current.value is not None
            if request.operation == "put" and live:
                raise OwnerRefused(
                    "owner.operation", f"secret {request.name!r} exists: rotate it instead"
                )
            if request.operation in ("rotate", "delete") and not live:
                raise OwnerRefused(
                    "owner.operation", f"there is no secret {request.name!r} to {request.operation}"
                )
            expected = self.next_version(request.name)
            if request.version != expected:
                raise OwnerRefused(
                    "owner.version",
                    f"version {request.version} for secret {request.name!r}, expected {expected}: "
                    "a replayed or stale request",
                )
            stored = None if request.operation == "delete" else value
            if request.value_sha256 != value_digest(None if stored is None else stored.reveal()):
                raise OwnerRefused("owner.digest", "the value sent is not the one the owner signed")
            entries = {**self._snapshot.entries, request.name: StoredSecret(expected, stored)}
            snapshot = _Snapshot(self._snapshot.store, self._snapshot.generation + 1, entries)
            if self._sealer.sealed:
                self._write(snapshot)
            self._snapshot = snapshot
