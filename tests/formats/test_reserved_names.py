"""``owners`` names the kms's owner edge in an inbound list, so it can name no service: a
service, a peer or a manifest entry of that name could be taken for the owners."""

from __future__ import annotations

import pytest

from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import ManifestFormatError, parse_manifest
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.testing import AuditorPanel

SERVICE_YAML = """\
name: kms
entrypoint: kms_service:build
enclave: {{isv_prod_id: 1, isv_svn: 1}}
inbound: {inbound}
outbound: {outbound}
"""
MANIFEST = 'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves:\n  {service}:\n{entry}'


def service_yaml(inbound: str = "[owners, storage]", outbound: str = "[]") -> bytes:
    return SERVICE_YAML.format(inbound=inbound, outbound=outbound).encode()


def test_a_kms_may_admit_its_owners_on_the_inbound_edge() -> None:
    assert parse_service_config(service_yaml(), "service.yaml").inbound == ("owners", "storage")


def test_no_service_may_be_called_owners() -> None:
    document = service_yaml().replace(b"name: kms", b"name: owners")
    with pytest.raises(InputError, match="'owners' is reserved") as caught:
        parse_service_config(document, "service.yaml")
    assert caught.value.field == "name"


def test_no_service_may_call_owners() -> None:
    with pytest.raises(InputError, match="'owners' is reserved") as caught:
        parse_service_config(service_yaml(outbound="[storage, owners]"), "service.yaml")
    assert caught.value.field == "outbound[1]"


def manifest_entry() -> str:
    panel = AuditorPanel()
    identity = SgxIdentity(b"\x01" * 32, b"\x02" * 32, isv_prod_id=1, isv_svn=1, debug=False)
    signed = panel.manifest({"storage": [identity]}).decode()
    return signed[signed.index("  storage:\n") + len("  storage:\n") :]


def test_a_manifest_accepts_no_enclave_for_owners() -> None:
    entry = manifest_entry()
    assert (
        "storage"
        in parse_manifest(MANIFEST.format(service="storage", entry=entry).encode()).enclaves
    )
    with pytest.raises(ManifestFormatError, match="'owners' is reserved") as caught:
        parse_manifest(MANIFEST.format(service="owners", entry=entry).encode())
    assert caught.value.field == "enclaves.owners"


def test_a_secret_is_released_to_no_service_called_owners() -> None:
    document = (
        'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves: {}\n'
        "secrets:\n  k: {allow: [storage, owners]}\n"
    )
    with pytest.raises(ManifestFormatError, match="'owners' is reserved") as caught:
        parse_manifest(document.encode())
    assert caught.value.field == "secrets.k.allow[1]"


def test_manifest_add_refuses_an_entry_for_owners() -> None:
    manifest = parse_manifest(MANIFEST.format(service="storage", entry=manifest_entry()).encode())
    with pytest.raises(ManifestFormatError, match="invalid service name 'owners'"):
        manifest.with_entry("owners", manifest.enclaves["storage"][0])
