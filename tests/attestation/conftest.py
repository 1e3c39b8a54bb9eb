from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.sim import pki as sim_pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform

# Inside both real samples' collateral windows (see ../shared/data/README.md).
SAMPLE_TIME = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def sgx_quote(shared_data: Path) -> bytes:
    return (shared_data / "sgx" / "quote.bin").read_bytes()


@pytest.fixture(scope="session")
def sgx_collateral(shared_data: Path) -> bytes:
    return (shared_data / "sgx" / "collateral.json").read_bytes()


@pytest.fixture(scope="session")
def tdx_quote(shared_data: Path) -> bytes:
    return (shared_data / "tdx" / "quote.bin").read_bytes()


@pytest.fixture(scope="session")
def tdx_collateral(shared_data: Path) -> bytes:
    return (shared_data / "tdx" / "collateral.json").read_bytes()


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


# -- builders for attacks on quotes and collateral (tests/attacks, tests/attestation) --------


def edit_collateral(collateral_json: bytes, change: Callable[[dict[str, str]], None]) -> Collateral:
    """Collateral parsed from ``collateral_json`` after ``change`` edited its JSON fields."""
    document = json.loads(collateral_json)
    change(document)
    return Collateral.from_json(json.dumps(document))


def reissued_crl(
    platform: SimulatedPlatform,
    issuer: str,
    revoked: Sequence[int] = (),
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> str:
    """A CRL of ``platform``'s CA ``issuer`` ("root" or "platform_ca"), hex DER as in collateral."""
    crl = sim_pki.crl(
        platform.certs[issuer], platform.keys[issuer], revoked,
        this_update=this_update, next_update=next_update,
    )  # fmt: skip
    return crl.public_bytes(serialization.Encoding.DER).hex()


def with_attestation_key(
    platform: SimulatedPlatform, key: ec.EllipticCurvePrivateKey
) -> SimulatedPlatform:
    """``platform`` signing its SGX quotes with ``key``, while its QE report still
    certifies the original attestation key."""
    return attrs.evolve(platform, keys={**platform.keys, "attestation": key})


# Who issues each certificate of a simulated platform, issuers first.
_SIM_ISSUERS = {"root": "root", "platform_ca": "root", "tcb_signing": "root", "pck": "platform_ca"}


def renamed_platform(
    platform: SimulatedPlatform, subjects: Mapping[str, x509.Name]
) -> SimulatedPlatform:
    """``platform`` with its certificates reissued under other subject names (by role:
    root, platform_ca, tcb_signing, pck), keeping keys, serials, validity and extensions,
    so its quotes still verify under its own root: a look-alike PKI."""
    certs: dict[str, x509.Certificate] = {}
    for role, issuer in _SIM_ISSUERS.items():
        old = platform.certs[role]
        subject = subjects.get(role, old.subject)
        builder = x509.CertificateBuilder(
            issuer_name=subject if role == "root" else certs[issuer].subject,
            subject_name=subject,
            public_key=old.public_key(),
            serial_number=old.serial_number,
            not_valid_before=old.not_valid_before_utc,
            not_valid_after=old.not_valid_after_utc,
            extensions=list(old.extensions),
        )
        certs[role] = builder.sign(platform.keys[issuer], hashes.SHA256())
    return attrs.evolve(platform, certs={**platform.certs, **certs})
