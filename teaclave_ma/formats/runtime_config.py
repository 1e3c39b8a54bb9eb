"""``runtime.yaml``: how one deployment runs a service. Not measured, so it holds only what
may differ between deployments without changing who the service is.

::

    listen: 127.0.0.1:7003
    peers:                        # address of each outbound service
      authentication: 127.0.0.1:7002
    state_dir: /var/lib/teaclave-ma/storage
    attestation:
      backend: simulated          # the only backend until real hardware backends land
      simulated_platform: /path/to/sim-platform
      trust_simulated_root: true  # required, loud opt-in: quotes prove nothing about hardware
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.service_config import SERVICE_NAME
from teaclave_ma.formats.strict import (
    expect_bool,
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


@attrs.frozen
class SimulatedAttestation:
    platform_dir: Path


@attrs.frozen
class RuntimeConfig:
    listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]
    state_dir: Path
    attestation: SimulatedAttestation
    config_dir: Path = Path()
    settings: dict[str, str] = attrs.field(factory=dict)
    provision_dir: Path | None = (
        None  # where `teaclave-ma run` may write secrets and unsealed files
    )


def parse_runtime_config(data: bytes, base: Path, what: str = "runtime.yaml") -> RuntimeConfig:
    """Relative paths are resolved against ``base`` (the config file's directory)."""
    try:
        mapping = parse_yaml_mapping(data, what)
        expect_keys(
            mapping,
            "",
            ["listen", "state_dir", "attestation"],
            ["peers", "settings", "provision_dir"],
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
        attestation = expect_mapping(mapping["attestation"], "attestation")
        expect_keys(
            attestation, "attestation", ["backend"], ["simulated_platform", "trust_simulated_root"]
        )
        backend = expect_str(attestation["backend"], "attestation.backend")
        if backend != "simulated":
            raise ConfigError(
                "attestation.backend", f"unknown backend {backend!r} (available: simulated)"
            )
        if "simulated_platform" not in attestation:
            raise ConfigError(
                "attestation.simulated_platform", "required for the simulated backend"
            )
        opted_in = expect_bool(
            attestation.get("trust_simulated_root", False), "attestation.trust_simulated_root"
        )
        if not opted_in:
            raise ConfigError(
                "attestation.trust_simulated_root",
                "the simulated backend needs trust_simulated_root: true, an explicit admission "
                "that its quotes prove nothing about hardware",
            )
        platform_dir = Path(
            expect_str(attestation["simulated_platform"], "attestation.simulated_platform")
        )
        return RuntimeConfig(
            listen=parse_address(mapping["listen"], "listen"),
            peers=peers,
            state_dir=base / expect_str(mapping["state_dir"], "state_dir"),
            attestation=SimulatedAttestation(base / platform_dir),
            config_dir=base,
            settings=settings,
            provision_dir=provision_dir,
        )
    except ConfigError:
        raise
    except InputError as exc:
        raise ConfigError(exc.field, exc.problem) from exc
