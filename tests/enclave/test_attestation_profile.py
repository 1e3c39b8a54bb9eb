"""The root of trust measured into an image (attestation.json) and the measured TCB section
of service.yaml: each malformed or contradictory form is refused, naming the field."""

from __future__ import annotations

import json

import pytest

from teaclave_ma.attestation.anchors import INTEL_SGX_ROOT_CA
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.enclave.attestation_profile import (
    INTEL_PROFILE,
    parse_profile,
    simulated_profile,
)
from teaclave_ma.enclave.errors import ImageFormatError
from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import parse_service_config

INTEL = INTEL_SGX_ROOT_CA.root_sha256.hex()


def document(root: dict[str, object], simulated: object) -> bytes:
    return json.dumps({"root": root, "simulated": simulated}).encode()


def test_profiles_round_trip() -> None:
    assert parse_profile(INTEL_PROFILE.to_bytes()) == INTEL_PROFILE
    platform = SimulatedPlatform.create()
    profile = simulated_profile(platform.root_certificate_der, "sim", "TDX")
    parsed = parse_profile(profile.to_bytes())
    assert parsed == profile
    assert parsed.simulated and parsed.simulated_tee == "TDX" and parsed.anchor.simulated


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (b"not json", "attestation.json", "not an attestation profile"),
        (
            document({"name": "x", "sha256": INTEL, "extra": 1}, None),
            "attestation.json",
            "unexpected keys",
        ),
        (
            document({"name": "x", "sha256": "AB" * 32}, None),
            "attestation.json: root.sha256",
            "64 lowercase hex digits",
        ),
        (
            document({"name": "x\n", "sha256": INTEL}, None),
            "attestation.json: root.name",
            "printable ASCII",
        ),
        # a "real" image pinned to anything but Intel's root
        (
            document({"name": "Intel SGX Root CA", "sha256": "00" * 32}, None),
            "attestation.json: root.sha256",
            "trusts Intel's root only",
        ),
        (
            document({"name": "s", "sha256": "00" * 32}, {"tee": "SEV"}),
            "attestation.json: simulated.tee",
            "expected SGX or TDX",
        ),
        (
            document({"name": "s", "sha256": "00" * 32}, True),
            "attestation.json: simulated",
            "expected null",
        ),
    ],
    ids=["json", "keys", "digest", "name", "not-intel", "tee", "simulated-form"],
)
def test_a_malformed_profile_is_refused_naming_the_field(
    data: bytes, field: str, problem: str
) -> None:
    with pytest.raises(ImageFormatError) as caught:
        parse_profile(data)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_a_simulated_profile_needs_a_known_tee() -> None:
    with pytest.raises(ImageFormatError, match="expected one of"):
        simulated_profile(b"root", "sim", "SEV")


BASE = b"name: s\nenclave: {isv_prod_id: 1, isv_svn: 1}\n"


def test_the_tcb_section_is_parsed_into_the_policy() -> None:
    config = parse_service_config(
        BASE + b"tcb: {allow_status: [UpToDate, SWHardeningNeeded], "
        b"allow_advisories: [INTEL-SA-00615], min_evaluation_data_number: 17}\n"
    )
    policy = config.tcb.policy()
    assert policy.allowed_tcb_statuses == {"UpToDate", "SWHardeningNeeded"}
    assert policy.allowed_advisories == {"INTEL-SA-00615"}
    assert policy.min_tcb_evaluation_data_number == 17


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b"tcb: {allow_status: [Revoked]}\n", "tcb.allow_status[0]"),
        (b"tcb: {allow_advisories: [CVE-2024-1]}\n", "tcb.allow_advisories[0]"),
        (b"tcb: {min_evaluation_data_number: -1}\n", "tcb.min_evaluation_data_number"),
        (b"tcb: {allow_debug: true}\n", "tcb.allow_debug"),
        (b"state: {seal_to: platform}\n", "state.seal_to"),
        (b"attestation: {backends: []}\n", "attestation.backends"),
        (b"attestation: {backends: [tsm, tsm]}\n", "attestation.backends"),
    ],
    ids=["revoked", "advisory-id", "negative", "unknown-key", "seal-to", "no-backend", "twice"],
)
def test_a_bad_measured_section_is_refused_naming_the_field(line: bytes, field: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_service_config(BASE + line)
    assert caught.value.field == field
