"""The key-provisioning service's secrets file and its release policy.

::

    secrets:
      token-key:
        value: 3q2+7w==             # base64
        allow: [authentication]     # service names; through the manifest, measurements
        min_config_svn: 0           # optional
        relax:                      # optional: checks turned off, each with its reason
          verify_config_svn: "authentication has no configuration versions yet"

A secret is released only to a peer whose service is in ``allow`` and whose attested
identity matches, in the manifest in force at release time, an entry of that service on
every check that is on: ``verify_mr_enclave``, ``verify_mr_signer``,
``verify_isv_prod_id``, ``verify_isv_svn`` (at least the entry's min_isv_svn),
``verify_config_svn`` (at least ``min_config_svn``) and ``verify_enclave_debuggable``
(not a debug enclave), the same switches as Occlum's RA verify config, all on by default.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping

import attrs

from teaclave_ma.errors import InputError, VerificationError
from teaclave_ma.formats.manifest import Accepted, AcceptedTdIdentity
from teaclave_ma.formats.service_config import SERVICE_NAME
from teaclave_ma.formats.strict import (
    expect_int,
    expect_keys,
    expect_list,
    expect_mapping,
    expect_str,
    join,
    parse_yaml_mapping,
)
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.trust.manifest_trust import VerifiedManifest

log = logging.getLogger(__name__)

SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_./-]{0,127}")
FLAGS = (
    "verify_mr_enclave",
    "verify_mr_signer",
    "verify_isv_prod_id",
    "verify_isv_svn",
    "verify_config_svn",
    "verify_enclave_debuggable",
)


class SecretsFileError(InputError):
    """A secrets file that cannot be used."""


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
    value: SecretValue
    allow: tuple[str, ...]
    min_config_svn: int = 0
    relaxed: Mapping[str, str] = attrs.field(factory=dict)  # flag -> reason

    def on(self, flag: str) -> bool:
        return flag not in self.relaxed

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
                identity.config_svn >= self.min_config_svn,
                f"config_svn below {self.min_config_svn}",
            ),
            ("verify_enclave_debuggable", not identity.debug, "debug enclave"),
        )
        failed = [f"{flag}: {why}" for flag, ok, why in checks if self.on(flag) and not ok]
        pinned = entry.pins.mismatch(peer.platform)  # not a check a rule can turn off
        if pinned:
            failed.append(pinned)
        return "; ".join(failed) or None


@attrs.frozen
class SecretsPolicy:
    rules: Mapping[str, SecretRule]

    def log_relaxations(self) -> None:
        for rule in self.rules.values():
            for flag, reason in rule.relaxed.items():
                log.warning("secret %r: %s is OFF: %s", rule.name, flag, reason)

    def release(self, name: str, peer: PeerIdentity, manifest: VerifiedManifest) -> SecretValue:
        """The secret for ``peer``, or ``SecretRefused`` naming the rule that stops it."""
        rule = self.rules.get(name)
        if rule is None:
            raise SecretRefused(f"secrets.{name}", f"there is no secret named {name!r}")
        if peer.service not in rule.allow:
            raise SecretRefused(
                f"secrets.{name}.allow",
                f"secret {name!r} is not released to service {peer.service!r} (allowed: {', '.join(rule.allow)})",
            )
        reasons = []
        for entry in manifest.manifest.enclaves.get(peer.service, ()):
            why = rule.mismatch(entry, peer)
            if why is None:
                log.info("released secret %r to %s", name, peer.describe())
                return rule.value
            reasons.append(why)
        raise SecretRefused(
            f"secrets.{name}.verify",
            f"secret {name!r}: {peer.describe()} matches no entry of manifest v{manifest.version} "
            f"for {peer.service!r} ({'; '.join(reasons) or 'no entries'})",
        )


def parse_secrets_file(data: bytes, what: str = "secrets file") -> SecretsPolicy:
    try:
        mapping = parse_yaml_mapping(data, what)
        expect_keys(mapping, "", ["secrets"])
        rules = {}
        for name, item in expect_mapping(mapping["secrets"], "secrets").items():
            where = join("secrets", name)
            if not SECRET_NAME.fullmatch(name):
                raise SecretsFileError(
                    where, f"invalid secret name (expected {SECRET_NAME.pattern})"
                )
            rules[name] = _parse_rule(name, expect_mapping(item, where), where)
        return SecretsPolicy(rules)
    except SecretsFileError:
        raise
    except InputError as exc:
        # never echo a value back: the problem text names the field, not its content
        raise SecretsFileError(exc.field, exc.problem.split(", got ")[0]) from exc


def _parse_rule(name: str, item: dict[str, object], where: str) -> SecretRule:
    expect_keys(item, where, ["value", "allow"], ["min_config_svn", "relax"])
    encoded = expect_str(item["value"], join(where, "value"))
    try:
        value = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SecretsFileError(join(where, "value"), "not valid base64") from None
    allow = tuple(
        expect_str(service, join(join(where, "allow"), i), SERVICE_NAME)
        for i, service in enumerate(expect_list(item["allow"], join(where, "allow")))
    )
    if not allow:
        raise SecretsFileError(
            join(where, "allow"), "names no service: the secret could never be released"
        )
    relaxed = {}
    for flag, reason in expect_mapping(item.get("relax", {}), join(where, "relax")).items():
        if flag not in FLAGS:
            raise SecretsFileError(
                join(join(where, "relax"), flag), f"unknown check (known: {', '.join(FLAGS)})"
            )
        text = expect_str(reason, join(join(where, "relax"), flag)).strip()
        if not text:
            raise SecretsFileError(
                join(join(where, "relax"), flag), "turning a check off needs a reason"
            )
        relaxed[flag] = text
    return SecretRule(
        name=name,
        value=SecretValue(value),
        allow=allow,
        min_config_svn=expect_int(
            item.get("min_config_svn", 0), join(where, "min_config_svn"), 0, 0xFFFF
        ),
        relaxed=relaxed,
    )
