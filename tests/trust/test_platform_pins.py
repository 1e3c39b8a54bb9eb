"""Platform pinning: a manifest entry may admit peers only on listed FMSPCs and PPIDs, which
come from the PCK certificate of the peer's verified quote. The decision is the entry match
of ``VerifiedManifest.expect``; every refusal names the entry, the field, expected and got."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.cli.main import main
from teaclave_ma.formats.manifest import (
    AcceptedIdentity,
    AcceptedTdIdentity,
    ManifestFormatError,
    PlatformPins,
    SecretRelease,
    parse_manifest,
)
from teaclave_ma.identity import PeerMeasurement, Platform, TdxIdentity
from teaclave_ma.secrets.policy import SecretRefused, SecretValue, release
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.transport.peer_verify import PeerIdentity
from teaclave_ma.trust.manifest_trust import IdentityNotAccepted, ManifestTrust, VerifiedManifest
from tests.helpers import run_cli
from tests.transport.test_peer_cache import STORAGE, Setup

NOW = dt.datetime.now(dt.UTC)
FMSPC, OTHER_FMSPC = bytes.fromhex("00906ed50000"), bytes.fromhex("00606a000000")
PPID, OTHER_PPID = b"\x11" * 16, b"\x22" * 16
HERE = Platform(FMSPC, PPID)
ENTRY = AcceptedIdentity(STORAGE.mr_enclave, STORAGE.mr_signer, 4, 1)
TD = TdxIdentity(
    mr_td=b"\x01" * 48,
    rtmr0=b"\x02" * 48,
    rtmr1=b"\x02" * 48,
    rtmr2=b"\x02" * 48,
    rtmr3=b"\x02" * 48,
    td_attributes=b"\x00" * 8,
    xfam=b"\x03" * 8,
)
Entry = TypeVar("Entry", AcceptedIdentity, AcceptedTdIdentity)
ENTRY_DOCUMENT = ENTRY.to_document()
TD_ENTRY = AcceptedTdIdentity(*(getattr(TD, name) for name in attrs.fields_dict(TdxIdentity)))


def verified(*entries: AcceptedIdentity | AcceptedTdIdentity) -> VerifiedManifest:
    panel = AuditorPanel()
    data = panel.manifest({"storage": entries})
    return ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)


def pinned(entry: Entry, **pins: tuple[bytes, ...]) -> Entry:
    return attrs.evolve(entry, pins=PlatformPins(**pins))


def refusal(
    manifest: VerifiedManifest, platform: Platform | None, identity: PeerMeasurement = STORAGE
) -> str:
    with pytest.raises(IdentityNotAccepted) as caught:
        manifest.expect("storage", identity, platform)
    return str(caught.value)


# -- the manifest form --------------------------------------------------------------------------


def entry_text(extra: str) -> bytes:
    return (
        'version: 1\nexpires: "2030-01-01T00:00:00Z"\nenclaves:\n  storage:\n'
        f"  - mr_enclave: '{'61' * 32}'\n    mr_signer: '{'62' * 32}'\n"
        f"    isv_prod_id: 4\n    min_isv_svn: 1\n{extra}"
    ).encode()


def test_pins_are_read_and_written_back() -> None:
    manifest = parse_manifest(
        entry_text(f"    fmspcs: [00906ED50000, 00606a000000]\n    ppids: ['{'11' * 16}']\n")
    )
    (entry,) = manifest.enclaves["storage"]
    assert entry.pins == PlatformPins(fmspcs=(FMSPC, OTHER_FMSPC), ppids=(PPID,))
    assert parse_manifest(manifest.to_bytes()) == manifest
    # An entry without pins is written as before: no empty lists appear.
    assert b"fmspcs" not in attrs.evolve(manifest, enclaves={"storage": (ENTRY,)}).to_bytes()


def test_tdx_entries_take_pins_too() -> None:
    entry = pinned(TD_ENTRY, fmspcs=(FMSPC,))
    data = AuditorPanel.manifest({"vm": [entry]})
    assert parse_manifest(data).enclaves["vm"] == (entry,)


@pytest.mark.parametrize(
    ("extra", "field", "problem"),
    [
        ("    fmspcs: [00906ED500]\n", "enclaves.storage[0].fmspcs[0]", "expected 12 hex characters, got 10"),
        (f"    ppids: [{'1' * 32}]\n", "enclaves.storage[0].ppids[0]", "YAML read this hex value as a number; put it in quotes"),
        ("    fmspcs: [001020000000]\n", "enclaves.storage[0].fmspcs[0]", "YAML reads this hex value as a number (YAML 1.1 would read it as octal 138412032, YAML 1.2 as 1020000000); put it in quotes"),
        ("    fmspcs: []\n", "enclaves.storage[0].fmspcs", "an empty list admits nothing; leave the field out to admit any"),
        ("    fmspcs: [00906ED50000, 00906ed50000]\n", "enclaves.storage[0].fmspcs", "'00906ed50000' is listed twice"),
        ("    fmspcs: 00906ED50000\n", "enclaves.storage[0].fmspcs", "expected a list, got str"),
        ("    fmspc: [00906ED50000]\n", "enclaves.storage[0].fmspc", "unknown field"),
    ],
    ids=["short", "number", "octal-looking", "empty", "twice", "not-a-list", "misspelt"],
)  # fmt: skip
def test_bad_pins_are_typed_errors_naming_the_field(extra: str, field: str, problem: str) -> None:
    with pytest.raises(ManifestFormatError) as caught:
        parse_manifest(entry_text(extra))
    assert caught.value.field == field
    assert problem in caught.value.problem


# -- the match ----------------------------------------------------------------------------------


def test_an_entry_without_pins_admits_any_platform_even_an_unknown_one() -> None:
    manifest = verified(ENTRY)
    assert manifest.expect("storage", STORAGE, HERE) == ENTRY
    assert manifest.expect("storage", STORAGE, None) == ENTRY


@pytest.mark.parametrize(
    ("identity", "entry"),
    [
        (STORAGE, pinned(ENTRY, fmspcs=(OTHER_FMSPC, FMSPC))),
        (TD, pinned(TD_ENTRY, fmspcs=(OTHER_FMSPC, FMSPC))),
    ],
    ids=["sgx", "tdx"],
)
def test_a_pinned_fmspc_admits_its_platform_and_refuses_another(
    identity: PeerMeasurement, entry: AcceptedIdentity | AcceptedTdIdentity
) -> None:
    manifest = verified(entry)
    assert manifest.expect("storage", identity, HERE) is not None
    message = refusal(manifest, Platform(bytes(6), PPID), identity)
    assert "is not accepted for service 'storage' by manifest v1" in message
    assert (
        "enclaves.storage[0].fmspcs: the peer's fmspc 000000000000 is not listed "
        "(expected 00606a000000 or 00906ed50000)"
    ) in message


def test_a_pinned_ppid_admits_its_platform_and_refuses_another() -> None:
    manifest = verified(pinned(ENTRY, fmspcs=(FMSPC,), ppids=(PPID,)))
    assert manifest.expect("storage", STORAGE, HERE) is not None
    message = refusal(manifest, Platform(FMSPC, OTHER_PPID))
    assert (
        f"enclaves.storage[0].ppids: the peer's ppid {OTHER_PPID.hex()} is not listed "
        f"(expected {PPID.hex()})"
    ) in message


def test_a_pinned_entry_refuses_a_peer_whose_platform_is_unknown() -> None:
    manifest = verified(pinned(ENTRY, ppids=(PPID,)))
    assert "enclaves.storage[0].ppids: the peer's platform is not known" in refusal(manifest, None)


def test_the_refusal_names_the_entry_among_several() -> None:
    other_build = attrs.evolve(ENTRY, mr_enclave=b"\x71" * 32)
    manifest = verified(other_build, pinned(ENTRY, fmspcs=(OTHER_FMSPC,)))
    message = refusal(manifest, HERE)
    assert "mr_enclave 6161616161616161... != 7171717171717171...; " in message
    assert "enclaves.storage[1].fmspcs: the peer's fmspc 00906ed50000 is not listed" in message


# -- end to end: a quote from the simulated platform, through the peer verifier -----------------


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


def simulated(platform: SimulatedPlatform) -> Platform:
    extension = parse_pck_extension(platform.certs["pck"])
    assert extension.fmspc.hex() == platform.settings["fmspc"]
    return Platform(extension.fmspc, extension.ppid)


def test_an_entry_pinned_to_the_simulated_platform_admits_its_peers(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    own = simulated(platform)
    setup.both_load(verified(pinned(ENTRY, fmspcs=(own.fmspc,), ppids=(own.ppid,))))
    peer = setup.verifier.verify(setup.certificate, ["storage"])
    assert peer.service == "storage"
    assert peer.platform == own


def test_an_entry_pinned_to_another_fmspc_refuses_the_simulated_platforms_peers(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    own = simulated(platform)
    setup.manifests.manifest = verified(pinned(ENTRY, fmspcs=(OTHER_FMSPC,)))
    with pytest.raises(IdentityNotAccepted) as caught:
        setup.verifier.verify(setup.certificate, ["storage"])
    assert (
        f"enclaves.storage[0].fmspcs: the peer's fmspc {own.fmspc.hex()} is not listed "
        f"(expected {OTHER_FMSPC.hex()})"
    ) in str(caught.value)


def test_an_open_connection_is_refused_once_a_new_manifest_pins_another_platform(
    platform: SimulatedPlatform,
) -> None:
    setup = Setup(platform)
    peer = setup.verifier.verify(setup.certificate, ["storage"])
    panel = AuditorPanel()
    data = panel.manifest({"storage": [pinned(ENTRY, ppids=(OTHER_PPID,))]}, version=2)
    setup.manifests.manifest = ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)
    with pytest.raises(
        IdentityNotAccepted, match=r"enclaves\.storage\[0\]\.ppids: the peer's ppid"
    ):
        setup.verifier.recheck(peer)


# -- the kms applies the pins of the entry it releases against ----------------------------------


def test_the_kms_refuses_a_secret_to_a_peer_on_a_platform_its_entry_does_not_pin() -> None:
    values = {"token-key": SecretValue(bytes.fromhex("deadbeef"))}
    panel = AuditorPanel()
    data = panel.manifest(
        {"storage": [pinned(ENTRY, fmspcs=(FMSPC,))]},
        secrets={"token-key": SecretRelease(("storage",), relaxed={"verify_config_svn": "none"})},
    )
    manifest = ManifestTrust(panel.trust).check(data, panel.sign(data), NOW)

    def peer(platform: Platform) -> PeerIdentity:
        return PeerIdentity("storage", STORAGE, "UpToDate", (), 1, bytes(32), platform=platform)

    assert release("token-key", values, peer(HERE), manifest).reveal() == bytes.fromhex("deadbeef")
    with pytest.raises(SecretRefused) as caught:
        release("token-key", values, peer(Platform(OTHER_FMSPC, PPID)), manifest)
    assert caught.value.check == "secrets.token-key.verify"
    assert "fmspcs: the peer's fmspc 00606a000000 is not listed (expected 00906ed50000)" in str(
        caught.value
    )


# -- `teaclave-ma manifest add --fmspc/--ppid` --------------------------------------------------


def test_manifest_add_writes_the_pins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "manifest.yaml"
    code, _ = run_cli(
        capsys,
        "manifest",
        "new",
        "--version",
        "1",
        "--valid-days",
        "3",
        "--out",
        str(path),
        "--json",
    )
    assert code == 0
    code, data = run_cli(
        capsys, "manifest", "add", str(path), "--service", "storage",
        "--mr-enclave", "61" * 32, "--mr-signer", "62" * 32, "--isv-prod-id", "4", "--min-isv-svn", "1",
        "--fmspc", "00906ED50000", "--fmspc", OTHER_FMSPC.hex(), "--ppid", PPID.hex(), "--json",
    )  # fmt: skip
    assert code == 0
    assert data["entry"] == {
        **ENTRY_DOCUMENT,
        "fmspcs": [FMSPC.hex(), OTHER_FMSPC.hex()],
        "ppids": [PPID.hex()],
    }
    (entry,) = parse_manifest(path.read_bytes()).enclaves["storage"]
    assert entry.pins == PlatformPins(fmspcs=(FMSPC, OTHER_FMSPC), ppids=(PPID,))


def test_manifest_add_refuses_a_bad_pin_and_leaves_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "manifest.yaml"
    assert (
        run_cli(
            capsys, "manifest", "new", "--version", "1", "--valid-days", "3", "--out", str(path)
        )[0]
        == 0
    )
    before = path.read_bytes()
    code = main([
        "manifest", "add", str(path), "--service", "storage",
        "--mr-enclave", "61" * 32, "--mr-signer", "62" * 32, "--isv-prod-id", "4", "--min-isv-svn", "1",
        "--ppid", "1122",
    ])  # fmt: skip
    assert code == 2
    assert "--ppid[0]: expected 32 hex characters, got 4" in capsys.readouterr().err
    assert path.read_bytes() == before
