"""YAML documents: manifest (with platform pins), trust file, signature file, service.yaml
and runtime.yaml.
Any bytes parse or raise the library's own error, including documents that are valid YAML
of the wrong shape and YAML that expands (aliases) far beyond its size."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzzing.targets import simulated_sgx_identity, simulated_tdx_identity
from teaclave_ma.formats.manifest import PlatformPins, parse_manifest
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.formats.signature import parse_signature
from teaclave_ma.formats.trust import parse_trust_file
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.testing.auditors import accepted
from tests.conftest import PROJECT_ROOT
from tests.fuzz.mutations import FUZZ, mutated, parses_or_refuses, tree_mutated

Parser = Callable[[bytes], object]
RUNTIME_CONFIGS = (
    b"listen: 127.0.0.1:7003\npeers: {authentication: '127.0.0.1:7002', kms: '[::1]:7005'}\n"
    b"state_dir: state\nprovision_dir: provision\nsettings: {greeting: hello}\n"
    b"attestation: {simulated_platform: sim}\n",
    b"listen: 0.0.0.0:443\nstate_dir: /var/lib/x\nattestation:\n"
    b"  collateral: {pccs: 'https://pccs:8081', cache_dir: c}\n",
    b"listen: localhost:1\nstate_dir: s\nattestation: {tsm_entry: e,"
    b" collateral: {file: collateral.json}}\n",
)


def parse_runtime(data: bytes) -> object:
    return parse_runtime_config(data, Path("/srv/service"))


@functools.cache
def samples() -> dict[str, tuple[Parser, list[bytes]]]:
    """Each document parser with valid documents of every shape it reads."""
    panel = AuditorPanel()
    pinned = attrs.evolve(
        accepted(simulated_sgx_identity()),
        pins=PlatformPins(fmspcs=(bytes.fromhex("00906ed50000"),), ppids=(b"\x11" * 16,)),
    )
    manifest = panel.manifest(
        {"storage": [simulated_sgx_identity(), pinned], "vm": [simulated_tdx_identity()]},
        version=3,
        expires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    services = sorted((PROJECT_ROOT / "services").glob("*/service.yaml"))
    return {
        "manifest": (parse_manifest, [manifest, panel.manifest({}, version=1)]),
        "trust": (
            parse_trust_file,
            [panel.trust_bytes, (PROJECT_ROOT / "keys/trust.yaml").read_bytes()],
        ),
        "signature": (parse_signature, [files[1] for files in panel.sign(manifest, by=[0, 1])]),
        "service": (parse_service_config, [path.read_bytes() for path in services]),
        "runtime": (parse_runtime, list(RUNTIME_CONFIGS)),
    }


DOCUMENTS = ["manifest", "trust", "signature", "service", "runtime"]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_samples_parse(name: str) -> None:
    """Mutations start from documents the parser accepts, so they reach every field."""
    parser, documents = samples()[name]
    for document in documents:
        assert parser(document) is not None


@pytest.mark.parametrize("name", DOCUMENTS)
@FUZZ
@given(data=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_random_input(name: str, data: bytes) -> None:
    parses_or_refuses(samples()[name][0], data)


@pytest.mark.parametrize("name", DOCUMENTS)
@FUZZ
@given(choice=st.data())
def test_byte_mutations(name: str, choice: st.DataObject) -> None:
    parser, documents = samples()[name]
    parses_or_refuses(parser, choice.draw(st.sampled_from(documents).flatmap(mutated)))


def _dump(document: object, flow: bool) -> bytes:
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True).encode()


@pytest.mark.parametrize("name", DOCUMENTS)
@FUZZ
@given(choice=st.data())
def test_tree_mutations(name: str, choice: st.DataObject) -> None:
    """Valid YAML with one value of the document replaced, removed or added: each check
    after the YAML reader sees the value it must refuse."""
    parser, documents = samples()[name]
    tree = yaml.safe_load(choice.draw(st.sampled_from(documents)))
    changed = choice.draw(tree_mutated(tree))
    parses_or_refuses(parser, _dump(changed, choice.draw(st.booleans())))


def _alias_bomb(levels: int) -> bytes:
    """Billion laughs: each level a list of ten aliases of the one before."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines).encode() + b"\n"


@pytest.mark.parametrize("name", DOCUMENTS)
@pytest.mark.parametrize(
    "document",
    [
        _alias_bomb(9),
        b"enclaves: &e {storage: [*e]}\n",  # a mapping that contains itself
        b"version: 1\nexpires: 2030-01-01T00:00:00Z\nenclaves: &e {s: *e}\n",
        b"[" * 5000 + b"]" * 5000,  # nesting deeper than the recursion limit
        b"threshold: !!python/object/apply:os.system [true]\nauditors: []\n",
    ],
    ids=["alias-bomb", "self-reference", "self-reference-in-field", "deep-nesting", "python-tag"],
)
def test_hostile_yaml(name: str, document: bytes) -> None:
    """Each stops with the library's own error and without expanding what the aliases name."""
    parses_or_refuses(samples()[name][0], document)
