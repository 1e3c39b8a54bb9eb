"""The kms release policy and the values it guards.

The policy is the ``secrets:`` section of the manifest in force (see
``teaclave_ma.formats.manifest``): the auditors sign it with the rest, under the manifest's
threshold, expiry and rollback rules, so no file of the host decides who gets a secret.
A secret is released only to a peer whose service is in the rule's ``allow`` and whose
attested identity matches, in that manifest, an entry of that service on every check that
is on: ``verify_mr_enclave``, ``verify_mr_signer``, ``verify_isv_prod_id``,
``verify_isv_svn`` (at least the entry's min_isv_svn), ``verify_config_svn`` (at least
``min_config_svn``) and ``verify_enclave_debuggable`` (not a debug enclave).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from teaclave_ma.errors import VerificationError
from teaclave_ma.formats.manifest import Accepted, AcceptedTdIdentity, Manifest, SecretRelease
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.trust.manifest_trust import VerifiedManifest

log = logging.getLogger(__name__)


class SecretRefused(VerificationError):
    """A request the policy does not allow; ``check`` names the rule (``secrets.NAME.allow``)."""


@attrs.frozen(repr=False)
class SecretValue:
    """Secret bytes that never print: not in a repr, a log line, or an error message."""

    _value: bytes = attrs.field(alias="value")

    def __repr__(self) -> str:
        return f"SecretValue(<{len(self._value)} bytes>)"

    __str__ = __repr__

    def reveal(self) -> bytes:
        return self._value


@attrs.frozen
class SecretRule:
    name: str
    release: SecretRelease

    def on(self, flag: str) -> bool:
        return flag not in self.release.relaxed

    def mismatch(self, entry: Accepted, peer: PeerIdentity) -> str | None:
        identity = peer.identity
        if isinstance(entry, AcceptedTdIdentity) or not isinstance(identity, SgxIdentity):
            # TDX guests: the measurement registers must match the entry exactly (the SGX
            # switches have no TDX counterpart), and debug TDs are refused like enclaves.
            why = entry.mismatch(identity, peer.platform)
            if why is None and self.on("verify_enclave_debuggable") and identity.debug:
                why = "verify_enclave_debuggable: debug TD"
            return why
        checks = (
            ("verify_mr_enclave", identity.mr_enclave == entry.mr_enclave, "mr_enclave differs"),
            ("verify_mr_signer", identity.mr_signer == entry.mr_signer, "mr_signer differs"),
            (
                "verify_isv_prod_id",
                identity.isv_prod_id == entry.isv_prod_id,
                "isv_prod_id differs",
            ),
            (
                "verify_isv_svn",
                identity.isv_svn >= entry.min_isv_svn,
                f"isv_svn below {entry.min_isv_svn}",
            ),
            (
                "verify_config_svn",
                identity.config_svn >= self.release.min_config_svn,
                f"config_svn below {self.release.min_config_svn}",
            ),
            ("verify_enclave_debuggable", not identity.debug, "debug enclave"),
        )
        failed = [f"{flag}: {why}" for flag, ok, why in checks if self.on(flag) and not ok]
        pinned = entry.pins.mismatch(peer.platform)  # not a check a rule can turn off
        if pinned:
            failed.append(pinned)
        return "; ".join(failed) or None


def log_relaxations(manifest: Manifest) -> None:
    for name, rule in sorted(manifest.secrets.items()):
        for flag, reason in rule.relaxed.items():
            log.warning("secret %r: %s is OFF: %s", name, flag, reason)


def release(
    name: str,
    values: Mapping[str, SecretValue],
    peer: PeerIdentity,
    manifest: VerifiedManifest,
) -> SecretValue:
    """The value of secret ``name`` for ``peer`` under the manifest in force, or
    ``SecretRefused`` naming the rule that stops it."""
    signed = manifest.manifest.secrets.get(name)
    if signed is None:
        raise SecretRefused(
            f"secrets.{name}",
            f"manifest v{manifest.version} has no release rule for secret {name!r}",
        )
    if peer.service not in signed.allow:
        raise SecretRefused(
            f"secrets.{name}.allow",
            f"secret {name!r} is not released to service {peer.service!r} "
            f"(allowed: {', '.join(signed.allow)})",
        )
    rule = SecretRule(name, signed)
    reasons = []
    for entry in manifest.manifest.enclaves.get(peer.service, ()):
        why = rule.mismatch(entry, peer)
        if why is not None:
            reasons.append(why)
            continue
        value = values.get(name)
        if value is None:
            raise SecretRefused(
                f"secrets.{name}.value", f"the kms holds no value for secret {name!r}"
            )
        log.info("released secret %r to %s", name, peer.describe())
        return value
    raise SecretRefused(
        f"secrets.{name}.verify",
        f"secret {name!r}: {peer.describe()} matches no entry of manifest v{manifest.version} "
        f"for {peer.service!r} ({'; '.join(reasons) or 'no entries'})",
    )
