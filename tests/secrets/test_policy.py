"""The kms release policy, signed in the manifest: every rule refuses a crafted request, a
host file cannot change it, and values never leak."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from teaclave_ma.formats.manifest import (
    AcceptedIdentity,
    ManifestFormatError,
    SecretRelease,
    parse_manifest,
)
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.secrets.policy import SecretRefused, SecretValue, log_relaxations, release
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.trust.manifest_trust import ManifestRejected, ManifestTrust, VerifiedManifest

AUTH = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=3, isv_svn=2, debug=False, config_svn=1)
VALUE = b"token key bytes, never printed"
VALUES = {"token-key": SecretValue(VALUE)}
NOW = dt.datetime.now(dt.UTC)
RULE = SecretRelease(("authentication",))


def manifest_with(*entries: AcceptedIdentity, rule: SecretRelease = RULE) -> VerifiedManifest:
    panel = AuditorPanel()
    data = panel.manifest({"authentication": list(entries)}, secrets={"token-key": rule})
    return ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)


def peer(identity: SgxIdentity = AUTH, service: str = "authentication") -> PeerIdentity:
    return PeerIdentity(service, identity, "UpToDate", (), 1, b"\x00" * 32)


ENTRY = AcceptedIdentity(AUTH.mr_enclave, AUTH.mr_signer, 3, 2, False)


def test_allowed_service_with_matching_identity_gets_the_value() -> None:
    assert release("token-key", VALUES, peer(), manifest_with(ENTRY)).reveal() == VALUE


def refused(
    who: PeerIdentity, *entries: AcceptedIdentity, rule: SecretRelease = RULE
) -> SecretRefused:
    with pytest.raises(SecretRefused) as caught:
        release("token-key", VALUES, who, manifest_with(*(entries or (ENTRY,)), rule=rule))
    return caught.value


def test_another_service_is_refused_naming_the_rule() -> None:
    error = refused(peer(service="frontend"))
    assert error.check == "secrets.token-key.allow"
    assert "not released to service 'frontend'" in str(error)


def test_a_secret_without_a_signed_rule_is_refused() -> None:
    with pytest.raises(SecretRefused, match="manifest v1 has no release rule for secret 'nope'"):
        release("nope", {"nope": SecretValue(b"x")}, peer(), manifest_with(ENTRY))


def test_a_rule_without_a_value_is_refused() -> None:
    with pytest.raises(SecretRefused, match="holds no value for secret 'token-key'") as caught:
        release("token-key", {}, peer(), manifest_with(ENTRY))
    assert caught.value.check == "secrets.token-key.value"


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
    error = refused(peer(identity), entry)
    assert error.check == "secrets.token-key.verify"
    assert flag in str(error)
    relaxed = SecretRelease(("authentication",), relaxed={flag: "tested on purpose"})
    manifest = manifest_with(entry, rule=relaxed)
    assert release("token-key", VALUES, peer(identity), manifest).reveal() == VALUE


def test_config_svn_minimum() -> None:
    error = refused(peer(), rule=SecretRelease(("authentication",), min_config_svn=2))
    assert "verify_config_svn: config_svn below 2" in str(error)


def test_relaxed_checks_are_logged_with_their_reasons(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rule = SecretRelease(("authentication",), relaxed={"verify_config_svn": "no versions yet"})
    log_relaxations(manifest_with(ENTRY, rule=rule).manifest)
    assert "verify_config_svn is OFF: no versions yet" in caplog.text


def test_the_policy_round_trips_through_the_signed_bytes() -> None:
    rule = SecretRelease(("authentication",), 3, {"verify_isv_svn": "a reason"})
    data = AuditorPanel.manifest({}, secrets={"token-key": rule})
    assert parse_manifest(data).secrets == {"token-key": rule}
    assert b"secrets:" not in AuditorPanel.manifest({})  # older manifests keep their bytes


def test_a_policy_signed_by_too_few_auditors_is_refused() -> None:
    """The host rewrites allow: so that frontend gets token-key; the signatures no longer
    count, so no manifest (and no policy) is in force."""
    panel = AuditorPanel()
    data = panel.manifest({}, secrets={"token-key": RULE})
    forged = data.replace(b"- authentication", b"- frontend")
    assert forged != data
    with pytest.raises(ManifestRejected, match="signature"):
        ManifestTrust(panel.trust).check(forged, panel.sign(data), NOW)
    with pytest.raises(ManifestRejected, match="1 of the required 2"):
        ManifestTrust(panel.trust).check(data, panel.sign(data, by=[0]), NOW)


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        ("{allow: [a], relax: {verify_everything: x}}", "relax.verify_everything", "unknown check"),
        ("{allow: [a], relax: {verify_mr_enclave: ''}}", "relax.verify_mr_enclave", "a reason"),
        ("{allow: [a], colour: red}", "colour", "unknown field"),
        ("{allow: []}", "allow", "names no service"),
        ("{allow: [a, a]}", "allow", "listed twice"),
    ],
)
def test_policy_errors_name_the_field(rule: str, field: str, fragment: str) -> None:
    document = (
        f'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves: {{}}\nsecrets:\n  k: {rule}\n'
    )
    with pytest.raises(ManifestFormatError, match=fragment) as caught:
        parse_manifest(document.encode())
    assert caught.value.field == f"secrets.k.{field}"


def test_secret_values_never_appear_in_errors_or_reprs() -> None:
    assert VALUE.decode() not in repr(VALUES)
    assert repr(SecretValue(VALUE)) == f"SecretValue(<{len(VALUE)} bytes>)"
    assert VALUE.decode() not in str(SecretValue(VALUE))
