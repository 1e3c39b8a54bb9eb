"""Writing entries into the kms secrets file (mode 0600, atomically, validated)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from teaclave_ma.formats.strict import dump_yaml, parse_yaml_mapping
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.secrets.policy import SecretValue, parse_secrets_file

HEADER = b"# teaclave-ma kms secrets: values are base64. Keep this file readable by the kms only.\n"


def register_secret(path: Path, name: str, value: SecretValue, allow: Sequence[str]) -> None:
    """Add or replace secret ``name``; the result is validated before it replaces the file."""
    path = Path(path)
    document = (
        parse_yaml_mapping(path.read_bytes(), str(path)) if path.exists() else {"secrets": {}}
    )
    secrets = dict(document.get("secrets") or {})
    secrets[name] = {"value": base64.b64encode(value.reveal()).decode(), "allow": list(allow)}
    data = HEADER + dump_yaml({**document, "secrets": secrets})
    parse_secrets_file(data, str(path))
    atomic_write(path, data, mode=0o600)
