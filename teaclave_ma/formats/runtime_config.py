"""``runtime.yaml``: how one deployment runs a service. It is supplied by the host, is not
measured, and so holds only what may differ between deployments without changing whom the
service trusts (docs/configuration.md maps every setting).

::

    listen: 127.0.0.1:7003
    peers:                        # address of each outbound service
      authentication: 127.0.0.1:7002
    state_dir: /var/lib/teaclave-ma/storage
    attestation:
      simulated_platform: /path/to/sim-platform   # images built with --simulated-platform
      # real images instead: where peers' collateral comes from (it is signed by Intel)
      # collateral: {pccs: https://pccs.example:8081/sgx/certification/v4}   # or {file: ...}
    health: {listen: 127.0.0.1:9100}  # optional: plain-HTTP liveness, readiness and metrics

Which backends an image may use, which root it trusts and how it judges peers are measured
(service.yaml and the build); a key here that would change them is refused with
``UntrustedSetting``, which says where the setting belongs now.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.service_config import SERVICE_NAME
from teaclave_ma.formats.strict import (
    expect_keys,
    expect_mapping,
    expect_str,
    join,
    parse_yaml_mapping,
)

_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(?P<port>[0-9]{1,5})")


def parse_address(value: object, path: str) -> tuple[str, int]:
    text = expect_str(value, path)
    match = _ADDRESS.fullmatch(text)
    if match is None or not 0 <= int(match["port"]) <= 65535:
        raise ConfigError(path, f"expected HOST:PORT, got {text!r}")
    return match["host"].strip("[]"), int(match["port"])


class UntrustedSetting(ConfigError):
    """runtime.yaml tries to set something that decides whom the service trusts."""


# Settings that decide trust, and where each one is made now.
MEASURED_ELSEWHERE = {
    "attestation.backend": "service.yaml attestation.backends (measured); a simulated image "
    "is made with `teaclave-ma build --simulated-platform DIR`",
    "attestation.trust_simulated_root": "the build: `teaclave-ma build --simulated-platform DIR` "
    "measures that platform's root into the image",
    "attestation.tee": "the build: `teaclave-ma build --simulated-platform DIR --simulated-tee tdx`",
    "attestation.gramine_device": "service.yaml attestation.gramine_device (measured)",
    "attestation.tsm_root": "service.yaml attestation.tsm_root (measured)",
    "allow_tcb_status": "service.yaml tcb.allow_status (measured)",
    "tcb": "service.yaml tcb (measured)",
    "limits": "service.yaml limits (measured)",
    "inbound": "service.yaml inbound (measured)",
    "outbound": "service.yaml outbound (measured)",
    "trust": "the trust file embedded at build time (`teaclave-ma build --trust`)",
}


def _refuse_trust_settings(mapping: dict[str, object], prefix: str) -> None:
    for key in mapping:
        where = join(prefix, key) if prefix else key
        if where in MEASURED_ELSEWHERE:
            raise UntrustedSetting(
                where,
                "decides whom this service trusts, so the host may not set it here; it belongs "
                f"in {MEASURED_ELSEWHERE[where]}",
            )


@attrs.frozen
class AttestationConfig:
    """Host-supplied attestation details. A simulated image needs its platform directory
    (whose root must be the one measured into the image); a real image needs collateral
    for its peers' quotes (signed by Intel, so a file or a PCCS of the host's choosing
    cannot make a bad quote pass)."""

    platform_dir: Path | None = None
    tsm_entry: str | None = None  # reuse this report entry instead of creating one per quote
    collateral_file: Path | None = None
    pccs_url: str | None = None
    pccs_cache: Path | None = None
    pccs_update: str = "standard"  # or "early": a TCB recovery's collateral before its due date


def parse_attestation(value: object, base: Path) -> AttestationConfig:
    where = "attestation"
    attestation = expect_mapping(value, where)
    _refuse_trust_settings(attestation, where)
    expect_keys(attestation, where, [], ["simulated_platform", "tsm_entry", "collateral"])
    tsm_entry = (
        expect_str(attestation["tsm_entry"], "attestation.tsm_entry")
        if "tsm_entry" in attestation
        else None
    )
    if "simulated_platform" in attestation:
        if "collateral" in attestation or tsm_entry is not None:
            raise ConfigError(
                "attestation.simulated_platform",
                "a simulated image takes its collateral from its platform: give "
                "simulated_platform alone, or collateral for a real image",
            )
        return AttestationConfig(
            platform_dir=base
            / expect_str(attestation["simulated_platform"], "attestation.simulated_platform")
        )
    if "collateral" not in attestation:
        return AttestationConfig(tsm_entry=tsm_entry)
    collateral = expect_mapping(attestation["collateral"], "attestation.collateral")
    expect_keys(collateral, "attestation.collateral", [], ["file", "pccs", "cache_dir", "update"])
    if ("file" in collateral) == ("pccs" in collateral):
        raise ConfigError(
            "attestation.collateral", "give exactly one of file or pccs, to verify peers' quotes"
        )
    return AttestationConfig(
        tsm_entry=tsm_entry,
        collateral_file=base / expect_str(collateral["file"], "attestation.collateral.file")
        if "file" in collateral
        else None,
        pccs_url=expect_str(collateral["pccs"], "attestation.collateral.pccs")
        if "pccs" in collateral
        else None,
        pccs_cache=base
        / expect_str(collateral.get("cache_dir", "pccs-cache"), "attestation.collateral.cache_dir"),
        pccs_update=expect_str(
            collateral.get("update", "standard"),
            "attestation.collateral.update",
            re.compile("standard|early"),
        ),
    )


@attrs.frozen
class HealthConfig:
    """Where the plain-HTTP health and metrics endpoint listens (the pod's address or
    loopback). Host-supplied: it serves no secret and decides nothing about trust."""

    listen: tuple[str, int]


def parse_health(value: object) -> HealthConfig:
    health = expect_mapping(value, "health")
    expect_keys(health, "health", ["listen"], [])
    return HealthConfig(listen=parse_address(health["listen"], "health.listen"))


@attrs.frozen
class RuntimeConfig:
    listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]
    state_dir: Path
    attestation: AttestationConfig = AttestationConfig()
    config_dir: Path = Path()
    settings: dict[str, str] = attrs.field(factory=dict)
    provision_dir: Path | None = (
        None  # where `teaclave-ma run` may write secrets and unsealed files
    )
    health: HealthConfig | None = None


def parse_runtime_config(data: bytes, base: Path, what: str = "runtime.yaml") -> RuntimeConfig:
    """Relative paths are resolved against ``base`` (the config file's directory)."""
    try:
        mapping = parse_yaml_mapping(data, what)
        _refuse_trust_settings(mapping, "")
        expect_keys(
            mapping,
            "",
            ["listen", "state_dir"],
            ["attestation", "peers", "settings", "provision_dir", "health"],
        )
        settings = {
            key: expect_str(value, join("settings", key))
            for key, value in expect_mapping(mapping.get("settings", {}), "settings").items()
        }
        provision_dir = (
            base / expect_str(mapping["provision_dir"], "provision_dir")
            if "provision_dir" in mapping
            else None
        )
        peers = {}
        for name, address in expect_mapping(mapping.get("peers", {}), "peers").items():
            if not SERVICE_NAME.fullmatch(name):
                raise ConfigError(join("peers", name), "invalid service name")
            peers[name] = parse_address(address, join("peers", name))
        attestation = parse_attestation(mapping.get("attestation", {}), base)
        return RuntimeConfig(
            listen=parse_address(mapping["listen"], "listen"),
            peers=peers,
            state_dir=base / expect_str(mapping["state_dir"], "state_dir"),
            attestation=attestation,
            config_dir=base,
            settings=settings,
            provision_dir=provision_dir,
            health=parse_health(mapping["health"]) if "health" in mapping else None,
        )
    except ConfigError:
        raise
    except InputError as exc:
        raise ConfigError(exc.field, exc.problem) from exc
