"""Fixtures shared by the enclave image tests: an author key, a trust file, a service copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from teaclave_ma.crypto.author_key import generate_author_key, write_author_key
from teaclave_ma.testing import AuditorPanel

SERVICES = Path(__file__).resolve().parents[2] / "services"
DEV_TRUST = Path(__file__).resolve().parents[2] / "keys" / "trust.yaml"


@attrs.frozen
class Author:
    path: Path
    key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def author(tmp_path_factory: pytest.TempPathFactory) -> Author:
    """An RSA-3072 e=3 enclave signing key, generated once per module (keygen is slow)."""
    key = generate_author_key()
    path = tmp_path_factory.mktemp("author") / "author.key.pem"
    write_author_key(key, path)
    return Author(path, key)


@pytest.fixture(scope="module")
def panel() -> AuditorPanel:
    return AuditorPanel()


@pytest.fixture(scope="module")
def trust(panel: AuditorPanel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return panel.write_trust(tmp_path_factory.mktemp("trust") / "trust.yaml")


def copy_service(name: str, target: Path) -> Path:
    shutil.copytree(SERVICES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A private copy of the storage service's source, free to edit."""
    return copy_service("storage", tmp_path / "src" / "storage")
