"""The manifest and its signatures from a ConfigMap volume, updated as the kubelet does:
a service takes both from one generation, never one's manifest with the other's signatures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from teaclave_ma.formats.signature import read_signature_dir
from teaclave_ma.testing.auditors import AuditorPanel
from teaclave_ma.trust import keeper as keeper_module
from teaclave_ma.trust.keeper import ManifestFilesChanging, ManifestKeeper
from teaclave_ma.trust.manifest_trust import ManifestTrust

from .kubelet import DATA, ConfigMapVolume

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def generation(panel: AuditorPanel, version: int, by: list[int]) -> dict[str, bytes]:
    """The ConfigMap's keys: manifest.yaml and one <key id>.sig per signing auditor."""
    manifest = panel.manifest({}, version=version)
    return {"manifest.yaml": manifest, **dict(panel.sign(manifest, by=by))}


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    return ConfigMapVolume(tmp_path / "manifest")


def keeper_of(panel: AuditorPanel, volume: ConfigMapVolume) -> ManifestKeeper:
    # One ConfigMap holds both, so one volume, so one atomic swap covers both.
    return ManifestKeeper(ManifestTrust(panel.trust), volume.root / "manifest.yaml", volume.root)


def test_the_volume_is_laid_out_as_the_kubelets(
    auditor_panel: AuditorPanel, volume: ConfigMapVolume
) -> None:
    volume.write(generation(auditor_panel, 1, [0, 1]))
    first = (volume.root / DATA).readlink()
    assert first.name.startswith("..2026_12_02_")
    assert (volume.root / "manifest.yaml").readlink() == Path(DATA) / "manifest.yaml"
    volume.write(generation(auditor_panel, 2, [1, 2]))
    assert (volume.root / DATA).readlink() != first
    assert not (volume.root / first).exists()  # the old generation is gone
    assert not (volume.root / "..data_tmp").exists()
    names = sorted(path.name for path in volume.root.glob("*.sig"))
    assert names == sorted(f"{auditor_panel.auditors[i].key_id}.sig" for i in (1, 2))


def test_a_swap_between_the_manifest_and_the_signatures_is_read_again(
    auditor_panel: AuditorPanel, volume: ConfigMapVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume.write(generation(auditor_panel, 1, [0, 1]))
    keeper = keeper_of(auditor_panel, volume)
    assert keeper.load(NOW).version == 1
    new = generation(auditor_panel, 2, [1, 2])
    reads: list[list[tuple[str, bytes]]] = []

    def swap_then_read(directory: Path) -> list[tuple[str, bytes]]:
        # The kubelet's update lands just after the manifest was read, before the signatures.
        if not reads:
            volume.write(new)
        reads.append(read_signature_dir(directory))
        return reads[-1]

    monkeypatch.setattr(keeper_module, "read_signature_dir", swap_then_read)
    before = keeper.fingerprint()
    assert keeper.reload(NOW)
    assert keeper.fingerprint() != before
    assert keeper.current(NOW).version == 2
    # The race was hit: the first read paired v1's manifest with v2's signatures.
    assert sorted(reads[0]) == sorted(
        (name, data) for name, data in new.items() if name != "manifest.yaml"
    )
    assert len(reads) == 2


def test_without_the_swap_each_update_is_taken(
    auditor_panel: AuditorPanel, volume: ConfigMapVolume
) -> None:
    volume.write(generation(auditor_panel, 1, [0, 1]))
    keeper = keeper_of(auditor_panel, volume)
    keeper.load(NOW)
    seen = keeper.fingerprint()
    volume.write(generation(auditor_panel, 2, [0, 2]))
    assert keeper.fingerprint() != seen  # what the watcher polls for
    assert keeper.reload(NOW)
    assert keeper.current(NOW).version == 2


def test_files_that_never_settle_are_refused_and_the_manifest_in_force_stays(
    auditor_panel: AuditorPanel, volume: ConfigMapVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume.write(generation(auditor_panel, 1, [0, 1]))
    keeper = keeper_of(auditor_panel, volume)
    keeper.load(NOW)
    versions = iter(range(2, 100))

    def swap_every_time(directory: Path) -> list[tuple[str, bytes]]:
        volume.write(generation(auditor_panel, next(versions), [0, 1]))
        return read_signature_dir(directory)

    monkeypatch.setattr(keeper_module, "read_signature_dir", swap_every_time)
    with pytest.raises(ManifestFilesChanging) as caught:
        keeper.load(NOW)
    assert caught.value.field == str(volume.root / "manifest.yaml")
    assert "changed during each of 5 reads" in str(caught.value)
    assert not keeper.reload(NOW)
    assert keeper.current(NOW).version == 1
