from __future__ import annotations

from pathlib import Path

import pytest

from teaclave_ma.secrets.policy import parse_secrets_file
from teaclave_ma.secrets.sealing import (
    MAGIC,
    SealedFileTampered,
    SealError,
    new_key,
    seal_bytes,
    seal_source,
    unseal_bytes,
)
from teaclave_ma.secrets.store import register_secret

SERVICES = Path(__file__).resolve().parents[2] / "services"


def test_round_trip_and_tamper_detection() -> None:
    key = new_key()
    sealed = seal_bytes(key, b"confidential config")
    assert sealed.startswith(MAGIC) and b"confidential" not in sealed
    assert unseal_bytes(key, sealed, "f") == b"confidential config"
    for position in (len(MAGIC), len(MAGIC) + 30, len(sealed) - 1):
        tampered = sealed[:position] + bytes([sealed[position] ^ 1]) + sealed[position + 1 :]
        with pytest.raises(SealedFileTampered) as caught:
            unseal_bytes(key, tampered, "config.yaml.sealed")
        assert caught.value.check == "sealed_file"
    with pytest.raises(SealedFileTampered):
        unseal_bytes(new_key(), sealed, "f")
    with pytest.raises(SealError, match="not a teaclave-ma sealed file"):
        unseal_bytes(key, b"plain text", "f")


def test_seal_source_never_writes_the_plaintext(tmp_path: Path) -> None:
    key = new_key()
    out = tmp_path / "sealed"
    assert seal_source(SERVICES / "report", ["config.yaml"], out, key) == ["config.yaml.sealed"]
    assert not (out / "config.yaml").exists()
    assert (out / "report.py").read_bytes() == (SERVICES / "report" / "report.py").read_bytes()
    plaintext = (SERVICES / "report" / "config.yaml").read_bytes()
    assert unseal_bytes(key, (out / "config.yaml.sealed").read_bytes(), "x") == plaintext
    with pytest.raises(SealError, match="already exists"):
        seal_source(SERVICES / "report", ["config.yaml"], out, key)
    for bad in ("service.yaml", "../kms/service.yaml", "missing.txt"):
        with pytest.raises(SealError):
            seal_source(SERVICES / "report", [bad], tmp_path / f"x-{bad.replace('/', '_')}", key)


def test_registered_key_is_private_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "kms" / "secrets.yaml"
    register_secret(path, "sealing/report", new_key(), ["report"])
    register_secret(path, "api-token", new_key(), ["report"])
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(parse_secrets_file(path.read_bytes()).rules) == {"sealing/report", "api-token"}
