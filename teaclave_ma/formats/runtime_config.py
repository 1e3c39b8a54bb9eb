"""``runtime.yaml``: how one deployment runs a service. Not measured, so it holds only what
may differ between deployments without changing who the service is.

::

    listen: 127.0.0.1:7003
    peers:                        # address of each outbound service
      authentication: 127.0.0.1:7002
    state_dir: /var/lib/teaclave-ma/storage
    attestation:
      backend: simulated          # simulated | gramine | tsm | auto (real backends only)
      simulated_platform: /path/to/sim-platform
      trust_simulated_root: true  # required, loud opt-in: quotes prove nothing about hardware
      # on hardware instead:
      # backend: gramine          # gramine_device: /dev/attestation
      # collateral: {pccs: https://pccs.example:8081/sgx/certification/v4}   # or {file: ...}
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


BACKENDS = ("simulated", "gramine", "tsm", "auto")


@attrs.frozen
class AttestationConfig:
    """Which quote source this deployment uses, and how peers' quotes get collateral.

    ``auto`` picks the first real backend present (Gramine, then configfs-tsm) and never the
    simulated one, which must be chosen by name and admitted with ``trust_simulated_root``.
    """

    backend: str
    platform_dir: Path | None = None
    tee: str = "SGX"  # simulated backend only: run as an SGX enclave or as a TDX guest
    gramine_device: Path = Path("/dev/attestation")
    tsm_root: Path = Path("/sys/kernel/config/tsm/report")
    tsm_entry: str | None = None  # reuse this report entry instead of creating one per quote
    collateral_file: Path | None = None
    pccs_url: str | None = None
    pccs_cache: Path | None = None


def parse_attestation(value: object, base: Path) -> AttestationConfig:
    where = "attestation"
    attestation = expect_mapping(value, where)
    expect_keys(
        attestation,
        where,
        ["backend"],
        [
            "simulated_platform",
            "trust_simulated_root",
            "tee",
            "gramine_device",
            "tsm_root",
            "tsm_entry",
            "collateral",
        ],
    )
    backend = expect_str(attestation["backend"], "attestation.backend")
    if backend not in BACKENDS:
        raise ConfigError(
            "attestation.backend", f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})"
        )
    paths = {
        key: base / expect_str(attestation[key], join(where, key))
        for key in ("simulated_platform", "gramine_device", "tsm_root")
        if key in attestation
    }
    if backend == "simulated":
        if "simulated_platform" not in paths:
            raise ConfigError(
                "attestation.simulated_platform", "required for the simulated backend"
            )
        if not expect_bool(
            attestation.get("trust_simulated_root", False), "attestation.trust_simulated_root"
        ):
            raise ConfigError(
                "attestation.trust_simulated_root",
                "the simulated backend needs trust_simulated_root: true, an explicit admission "
                "that its quotes prove nothing about hardware",
            )
        tee = expect_str(
            attestation.get("tee", "sgx"), "attestation.tee", re.compile("sgx|tdx")
        ).upper()
        return AttestationConfig(backend, platform_dir=paths["simulated_platform"], tee=tee)
    if {"trust_simulated_root", "simulated_platform", "tee"} & set(attestation):
        raise ConfigError(
            "attestation.trust_simulated_root",
            f"only the simulated backend can trust a simulated root, not {backend!r}",
        )
    collateral = expect_mapping(attestation.get("collateral"), "attestation.collateral")
    expect_keys(collateral, "attestation.collateral", [], ["file", "pccs", "cache_dir"])
    if ("file" in collateral) == ("pccs" in collateral):
        raise ConfigError(
            "attestation.collateral", "give exactly one of file or pccs, to verify peers' quotes"
        )
    defaults = AttestationConfig(backend)
    return AttestationConfig(
        backend,
        gramine_device=paths.get("gramine_device", defaults.gramine_device),
        tsm_root=paths.get("tsm_root", defaults.tsm_root),
        tsm_entry=(
            expect_str(attestation["tsm_entry"], "attestation.tsm_entry")
            if "tsm_entry" in attestation
            else None
        ),
        collateral_file=base / expect_str(collateral["file"], "attestation.collateral.file")
        if "file" in collateral
        else None,
        pccs_url=expect_str(collateral["pccs"], "attestation.collateral.pccs")
        if "pccs" in collateral
        else None,
        pccs_cache=base
        / expect_str(collateral.get("cache_dir", "pccs-cache"), "attestation.collateral.cache_dir"),
    )


@attrs.frozen
class RuntimeConfig:
    listen: tuple[str, int]
    peers: dict[str, tuple[str, int]]
    state_dir: Path
    attestation: AttestationConfig
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
        attestation = parse_attestation(mapping["attestation"], base)
        return RuntimeConfig(
            listen=parse_address(mapping["listen"], "listen"),
            peers=peers,
            state_dir=base / expect_str(mapping["state_dir"], "state_dir"),
            attestation=attestation,
            config_dir=base,
            settings=settings,
            provision_dir=provision_dir,
        )
    except ConfigError:
        raise
    except InputError as exc:
        raise ConfigError(exc.field, exc.problem) from exc
