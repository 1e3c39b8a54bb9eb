"""Quote sources on real hardware, behind the one small ``Attester`` interface.

- Gramine (``/dev/attestation``): write the 64-byte report data to ``user_report_data``,
  read ``quote``; ``attestation_type`` must say ``dcap``.
  Sealing keys are ``keys/_sgx_mrenclave`` and ``keys/_sgx_mrsigner`` (16 bytes each).
- Linux configfs-tsm (``/sys/kernel/config/tsm/report``, kernel 6.7+): a report entry with
  ``inblob``, ``outblob``, ``provider`` and ``generation``. The generation counter is read
  around the exchange so that a concurrent writer to the same entry can never hand us
  someone else's quote.

The roots are configurable so that both backends run against directory trees laid out
like the real interfaces. Every failure names the file and what was wrong.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from pathlib import Path

import attrs

from teaclave_ma.attestation.attester import (
    TDX_HAS_NO_SEALING_KEY,
    SealingPolicy,
    SealingUnavailable,
)
from teaclave_ma.errors import InputError

GRAMINE_DEVICE = Path("/dev/attestation")
TSM_REPORTS = Path("/sys/kernel/config/tsm/report")
REPORT_DATA_SIZE = 64
SEALING_KEY_SIZE = 16


class AttesterUnavailable(InputError):
    """A backend that is not present or not usable here; ``field`` names the backend."""


class AttesterFailed(InputError):
    """A backend that is present but failed to produce a quote."""


def _read(path: Path, backend: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AttesterFailed(backend, f"{path} does not exist") from None
    except PermissionError:
        raise AttesterFailed(backend, f"permission denied reading {path}") from None
    except OSError as exc:
        raise AttesterFailed(backend, f"cannot read {path}: {exc.strerror}") from None


def _open_for_writing(path: Path) -> int:
    # Never O_CREAT: these are kernel or Gramine pseudo-files; a missing one is an error.
    return os.open(path, os.O_WRONLY)


def _write(path: Path, data: bytes, backend: str) -> None:
    try:
        fd = _open_for_writing(path)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise AttesterFailed(backend, f"{path} does not exist") from None
    except PermissionError:
        raise AttesterFailed(backend, f"permission denied writing {path}") from None
    except OSError as exc:
        raise AttesterFailed(backend, f"cannot write {path}: {exc.strerror}") from None
    if written != len(data):
        raise AttesterFailed(backend, f"short write to {path}: {written} of {len(data)} bytes")


def _check_report_data(report_data: bytes, backend: str) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise AttesterFailed(
            backend, f"report data must be {REPORT_DATA_SIZE} bytes, got {len(report_data)}"
        )


@attrs.define
class GramineAttester:
    root: Path = GRAMINE_DEVICE
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    name = "gramine"

    def check(self) -> None:
        """Raise ``AttesterUnavailable`` saying why this backend cannot be used here."""
        if not self.root.is_dir():
            raise AttesterUnavailable(
                self.name, f"{self.root} is missing: not running inside a Gramine enclave"
            )
        kind_file = self.root / "attestation_type"
        if not kind_file.exists():
            raise AttesterUnavailable(
                self.name, f"{kind_file} is missing: Gramine too old, or not Gramine"
            )
        kind = _read(kind_file, self.name).decode(errors="replace").strip()
        if kind == "none":
            raise AttesterUnavailable(
                self.name,
                f"{kind_file} says 'none': the Gramine manifest must set sgx.remote_attestation = \"dcap\"",
            )
        if kind != "dcap":
            raise AttesterUnavailable(
                self.name, f"{kind_file} says {kind!r}; only 'dcap' is supported"
            )

    def quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data, self.name)
        self.check()
        with self._lock:  # the device holds one report data at a time for the whole process
            _write(self.root / "user_report_data", report_data, self.name)
            quote = _read(self.root / "quote", self.name)
        if len(quote) < 48 + 384:
            raise AttesterFailed(
                self.name, f"{self.root / 'quote'}: short read ({len(quote)} bytes)"
            )
        return quote

    def sealing_key(self, policy: SealingPolicy, isv_svn: int | None = None) -> bytes:
        if isv_svn is not None:
            # Gramine asks EGETKEY with the enclave's own ISV SVN and offers no other.
            raise SealingUnavailable(
                self.name,
                f"{self.root / 'keys'} gives sealing keys for the enclave's own ISV SVN only, "
                f"not for ISV SVN {isv_svn}",
            )
        self.check()
        path = self.root / "keys" / f"_sgx_{policy.value}"
        key = _read(path, self.name)
        if len(key) != SEALING_KEY_SIZE:
            raise AttesterFailed(
                self.name, f"{path}: expected a {SEALING_KEY_SIZE}-byte key, got {len(key)} bytes"
            )
        return key


@attrs.define
class TsmAttester:
    root: Path = TSM_REPORTS
    entry_name: str | None = None  # reuse a prepared entry; by default a private one per quote
    settle_timeout: float = 2.0
    attempts: int = 3

    name = "tsm"

    def check(self) -> None:
        if not self.root.is_dir():
            raise AttesterUnavailable(
                self.name,
                f"{self.root} is missing: needs Linux 6.7+ with configfs mounted and a TSM provider",
            )
        if not os.access(self.root, os.W_OK) and not (
            self.entry_name and (self.root / self.entry_name).is_dir()
        ):
            raise AttesterUnavailable(
                self.name, f"permission denied: cannot create report entries in {self.root}"
            )

    def quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data, self.name)
        self.check()
        entry, created = self._entry()
        try:
            for _attempt in range(self.attempts):
                quote = self._exchange(entry, report_data)
                if quote is not None:
                    return quote
            raise AttesterFailed(
                self.name, f"{entry}: another writer kept changing the report; gave up"
            )
        finally:
            if created:
                with contextlib.suppress(OSError):  # a stale entry is harmless
                    entry.rmdir()

    def _entry(self) -> tuple[Path, bool]:
        if self.entry_name is not None:
            entry = self.root / self.entry_name
            if not entry.is_dir():
                raise AttesterFailed(self.name, f"{entry} does not exist")
            return entry, False
        entry = self.root / f"teaclave-ma-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            entry.mkdir()
        except PermissionError:
            raise AttesterFailed(self.name, f"permission denied creating {entry}") from None
        return entry, True

    def _generation(self, entry: Path) -> int:
        text = _read(entry / "generation", self.name).decode(errors="replace").strip()
        if not text.isdigit():
            raise AttesterFailed(
                self.name, f"{entry / 'generation'}: expected a number, got {text!r}"
            )
        return int(text)

    def _exchange(self, entry: Path, report_data: bytes) -> bytes | None:
        """One write/read round; None when a concurrent writer interfered."""
        before = self._generation(entry)
        _write(entry / "inblob", report_data, self.name)
        deadline = time.monotonic() + self.settle_timeout
        after = self._generation(entry)
        while after == before and time.monotonic() < deadline:
            time.sleep(0.001)
            after = self._generation(entry)
        if after == before:
            raise AttesterFailed(
                self.name, f"{entry / 'generation'} did not advance after writing inblob"
            )
        if after != before + 1:
            return None  # someone else wrote inblob as well
        quote = _read(entry / "outblob", self.name)
        if self._generation(entry) != after:
            return None  # the report changed under us while we read it
        if not quote:
            raise AttesterFailed(self.name, f"{entry / 'outblob'}: empty read")
        return quote

    def sealing_key(self, policy: SealingPolicy, isv_svn: int | None = None) -> bytes:
        raise SealingUnavailable(self.name, TDX_HAS_NO_SEALING_KEY)

    def provider(self) -> str:
        entry, created = self._entry()
        try:
            return _read(entry / "provider", self.name).decode(errors="replace").strip()
        finally:
            if created:
                entry.rmdir()
