"""What an auditor does to a manifest: sign its exact bytes."""

from __future__ import annotations

from teaclave_ma.crypto.auditor_key import AuditorSigningKey
from teaclave_ma.formats.signature import DetachedSignature


def sign_manifest(key: AuditorSigningKey, manifest_bytes: bytes) -> DetachedSignature:
    return DetachedSignature(key_id=key.public_key.key_id, signature=key.sign(manifest_bytes))
