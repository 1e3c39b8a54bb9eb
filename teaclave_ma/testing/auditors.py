"""Fake auditors that sign manifests on demand, including deliberately bad signatures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.formats.manifest import (
    TD_FIELDS,
    Accepted,
    AcceptedIdentity,
    AcceptedTdIdentity,
    Manifest,
    SecretRelease,
)
from teaclave_ma.formats.signature import DetachedSignature, write_signature
from teaclave_ma.formats.trust import TrustedAuditor, TrustFile
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.identity import PeerMeasurement, TdxIdentity
from teaclave_ma.trust.signing import sign_manifest

SignatureFiles = list[tuple[str, bytes]]


@attrs.frozen
class FakeAuditor:
    name: str
    key: AuditorSigningKey

    @property
    def key_id(self) -> str:
        return self.key.public_key.key_id

    def sign(self, manifest_bytes: bytes) -> DetachedSignature:
        return sign_manifest(self.key, manifest_bytes)


def accepted(identity: PeerMeasurement) -> Accepted:
    """The manifest entry that accepts exactly this identity (SGX form or tdx form)."""
    if isinstance(identity, TdxIdentity):
        return AcceptedTdIdentity(**{name: getattr(identity, name) for name in TD_FIELDS})
    return AcceptedIdentity(
        mr_enclave=identity.mr_enclave,
        mr_signer=identity.mr_signer,
        isv_prod_id=identity.isv_prod_id,
        min_isv_svn=identity.isv_svn,
        debug=identity.debug,
    )


class AuditorPanel:
    """``count`` fake auditors and the trust file that requires ``threshold`` of them."""

    def __init__(
        self, count: int = 3, threshold: int = 2, names: Sequence[str] | None = None
    ) -> None:
        names = list(names or [f"auditor{i}" for i in range(count)])
        self.auditors = [FakeAuditor(name, AuditorSigningKey.generate()) for name in names]
        self.trust = TrustFile(
            threshold=threshold,
            auditors=tuple(TrustedAuditor(a.name, a.key.public_key) for a in self.auditors),
        )

    @property
    def threshold(self) -> int:
        return self.trust.threshold

    @property
    def trust_bytes(self) -> bytes:
        return self.trust.to_bytes()

    def write_trust(self, path: Path) -> Path:
        atomic_write(Path(path), self.trust_bytes)
        return Path(path)

    @staticmethod
    def outsider(name: str = "outsider") -> FakeAuditor:
        """An auditor whose key is in no trust file."""
        return FakeAuditor(name, AuditorSigningKey.generate())

    @staticmethod
    def manifest(
        enclaves: Mapping[str, Iterable[Accepted | PeerMeasurement]] | None = None,
        *,
        version: int = 1,
        expires: dt.datetime | None = None,
        secrets: Mapping[str, SecretRelease] | None = None,
    ) -> bytes:
        """Manifest bytes; identities are accepted exactly as given. Expires in 30 days by
        default. ``secrets``: the kms release policy."""
        expires = expires or dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
        entries = {
            service: tuple(
                e if isinstance(e, AcceptedIdentity | AcceptedTdIdentity) else accepted(e)
                for e in items
            )
            for service, items in (enclaves or {}).items()
        }
        return Manifest(
            version=version, expires=expires, enclaves=entries, secrets=dict(secrets or {})
        ).to_bytes()

    def signers(self, by: Iterable[int | str] | None) -> list[FakeAuditor]:
        if by is None:
            return self.auditors[: self.threshold]
        by_name = {a.name: a for a in self.auditors}
        return [self.auditors[b] if isinstance(b, int) else by_name[b] for b in by]

    def sign(self, manifest_bytes: bytes, by: Iterable[int | str] | None = None) -> SignatureFiles:
        """Signature files as ``(name, bytes)``, ready for ``ManifestTrust.check``.

        ``by`` picks auditors by index or name (default: just enough to meet the threshold).
        """
        return [(f"{a.key_id}.sig", a.sign(manifest_bytes).to_bytes()) for a in self.signers(by)]

    def write_signatures(
        self, directory: Path, manifest_bytes: bytes, by: Iterable[int | str] | None = None
    ) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for auditor in self.signers(by):
            write_signature(directory, auditor.sign(manifest_bytes))
        return directory
