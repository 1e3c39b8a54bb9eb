"""The kms release policy: every rule refuses a crafted request, and values never leak."""

from __future__ import annotations

import base64
import datetime as dt
import logging

import pytest

from teaclave_ma.formats.manifest import AcceptedIdentity
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.secrets.policy import (
    SecretRefused,
    SecretsFileError,
    SecretValue,
    parse_secrets_file,
)
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.trust.manifest_trust import ManifestTrust, VerifiedManifest

AUTH = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=3, isv_svn=2, debug=False, config_svn=1)
VALUE = b"token key bytes, never printed"
NOW = dt.datetime.now(dt.UTC)


def secrets_file(extra: str = "") -> bytes:
    return (
        "secrets:\n  token-key:\n"
        f"    value: {base64.b64encode(VALUE).decode()}\n"
        "    allow: [authentication]\n" + extra
    ).encode()


def manifest_with(*entries: AcceptedIdentity) -> VerifiedManifest:
    panel = AuditorPanel()
    data = panel.manifest({"authentication": list(entries)})
    return ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)


def peer(identity: SgxIdentity = AUTH, service: str = "authentication") -> PeerIdentity:
    return PeerIdentity(service, identity, "UpToDate", (), 1, b"\x00" * 32)


ENTRY = AcceptedIdentity(AUTH.mr_enclave, AUTH.mr_signer, 3, 2, False)


def test_allowed_service_with_matching_identity_gets_the_value() -> None:
    policy = parse_secrets_file(secrets_file())
    assert policy.release("token-key", peer(), manifest_with(ENTRY)).reveal() == VALUE


def refused(policy_extra: str, who: PeerIdentity, *entries: AcceptedIdentity) -> SecretRefused:
    policy = parse_secrets_file(secrets_file(policy_extra))
    with pytest.raises(SecretRefused) as caught:
        policy.release("token-key", who, manifest_with(*(entries or (ENTRY,))))
    return caught.value


def test_another_service_is_refused_naming_the_rule() -> None:
    error = refused("", peer(service="frontend"))
    assert error.check == "secrets.token-key.allow"
    assert "not released to service 'frontend'" in str(error)


def test_unknown_secret_is_refused() -> None:
    with pytest.raises(SecretRefused, match="no secret named 'nope'"):
        parse_secrets_file(secrets_file()).release("nope", peer(), manifest_with(ENTRY))


@pytest.mark.parametrize(
    ("entry", "identity", "flag"),
    [
        (AcceptedIdentity(b"\x09" * 32, AUTH.mr_signer, 3, 2, False), AUTH, "verify_mr_enclave"),
        (AcceptedIdentity(AUTH.mr_enclave, b"\x09" * 32, 3, 2, False), AUTH, "verify_mr_signer"),
        (
            AcceptedIdentity(AUTH.mr_enclave, AUTH.mr_signer, 4, 2, False),
            AUTH,
            "verify_isv_prod_id",
        ),
        (AcceptedIdentity(AUTH.mr_enclave, AUTH.mr_signer, 3, 5, False), AUTH, "verify_isv_svn"),
        (
            AcceptedIdentity(AUTH.mr_enclave, AUTH.mr_signer, 3, 2, True),
            SgxIdentity(AUTH.mr_enclave, AUTH.mr_signer, 3, 2, True, 1),
            "verify_enclave_debuggable",
        ),
    ],
)
def test_each_check_refuses_and_can_be_relaxed_with_a_reason(
    entry: AcceptedIdentity, identity: SgxIdentity, flag: str
) -> None:
    error = refused("", peer(identity), entry)
    assert error.check == "secrets.token-key.verify"
    assert flag in str(error)
    policy = parse_secrets_file(secrets_file(f"    relax:\n      {flag}: tested on purpose\n"))
    assert policy.release("token-key", peer(identity), manifest_with(entry)).reveal() == VALUE


def test_config_svn_minimum() -> None:
    error = refused("    min_config_svn: 2\n", peer())
    assert "verify_config_svn: config_svn below 2" in str(error)


def test_relaxed_checks_are_logged_with_their_reasons(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parse_secrets_file(
        secrets_file("    relax:\n      verify_config_svn: no config versions yet\n")
    ).log_relaxations()
    assert "verify_config_svn is OFF: no config versions yet" in caplog.text


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("    relax:\n      verify_everything: x\n", "unknown check"),
        ("    relax:\n      verify_mr_enclave: ''\n", "needs a reason"),
        ("    colour: red\n", "unknown field"),
    ],
)
def test_secrets_file_errors(extra: str, fragment: str) -> None:
    with pytest.raises(SecretsFileError, match=fragment):
        parse_secrets_file(secrets_file(extra))


def test_secret_values_never_appear_in_errors_or_reprs() -> None:
    bad_value = b"secrets:\n  k:\n    value: 12345\n    allow: [a]\n"
    with pytest.raises(SecretsFileError) as caught:
        parse_secrets_file(bad_value)
    assert "12345" not in str(caught.value)
    with pytest.raises(SecretsFileError, match="not valid base64") as base64_error:
        parse_secrets_file(b"secrets:\n  k:\n    value: 'not base64!'\n    allow: [a]\n")
    assert "not base64!" not in str(base64_error.value)
    policy = parse_secrets_file(secrets_file())
    assert VALUE.decode() not in repr(policy)
    assert repr(SecretValue(VALUE)) == f"SecretValue(<{len(VALUE)} bytes>)"
    assert VALUE.decode() not in str(SecretValue(VALUE))
