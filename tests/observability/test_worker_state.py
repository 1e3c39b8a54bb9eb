"""The pieces that keep N workers to one trust state, played by the host: only the parent
writes the sealed state, and a worker verifies again whatever manifest it is sent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from teaclave_ma.errors import ConfigError
from teaclave_ma.formats.runtime_config import parse_runtime_config
from teaclave_ma.testing import AuditorPanel
from teaclave_ma.trust.keeper import ManifestKeeper, StateFile
from teaclave_ma.trust.manifest_trust import ManifestRejected, ManifestTrust
from tests.attacks.test_manifest_attacks import NOW, manifest
from tests.trust.sealing_helpers import sealed_keeper, sealer


def test_a_workers_copy_of_the_state_writes_nothing_and_hands_its_floor_to_the_parent(
    tmp_path: Path,
) -> None:
    platform = SimulatedPlatform.create()
    path = tmp_path / "state"
    state = StateFile.open(path, sealer(platform), initialize=True)
    sealed = path.read_bytes()
    handed: list[dt.datetime] = []
    state.forward_to(handed.append)
    state.update(floor=NOW)
    state.update(accepted=None, floor=NOW - dt.timedelta(days=1))  # never moves back
    assert path.read_bytes() == sealed  # N workers never race on the file
    assert handed == [NOW, NOW]
    assert state.state.floor == NOW


@pytest.fixture
def worker_keeper(
    auditor_panel: AuditorPanel, tmp_path: Path
) -> tuple[ManifestKeeper, AuditorPanel]:
    """A keeper as a worker has it after the fork: v3 accepted, writes handed to the parent."""
    data = manifest(version=3)
    (tmp_path / "manifest.yaml").write_bytes(data)
    auditor_panel.write_signatures(tmp_path / "sigs", data)
    trust = ManifestTrust(auditor_panel.trust)
    keeper = sealed_keeper(
        trust, tmp_path, tmp_path / "state", SimulatedPlatform.create(), initialize=True
    )
    keeper.load(NOW)
    keeper.forward_state_to(lambda _floor: None)
    return keeper, auditor_panel


def test_a_worker_sent_an_older_manifest_refuses_it_and_keeps_its_own(
    worker_keeper: tuple[ManifestKeeper, AuditorPanel],
) -> None:
    keeper, panel = worker_keeper
    older = manifest(version=2)
    with pytest.raises(ManifestRejected, match="manifest v2 is older than v3"):
        keeper.adopt(older, panel.sign(older), NOW)
    assert keeper.current(NOW).version == 3


def test_a_worker_sent_changed_bytes_refuses_them(
    worker_keeper: tuple[ManifestKeeper, AuditorPanel],
) -> None:
    keeper, panel = worker_keeper
    newer = manifest(version=4)
    signatures = panel.sign(newer)
    with pytest.raises(ManifestRejected, match="does not verify over these manifest bytes"):
        keeper.adopt(newer.replace(b"version: 4", b"version: 5"), signatures, NOW)
    assert keeper.current(NOW).version == 3


# -- runtime.yaml health: host-supplied, parsed strictly ----------------------------------------

BASE = b"listen: 127.0.0.1:7000\nstate_dir: state\n"


def test_health_listen_is_parsed(tmp_path: Path) -> None:
    config = parse_runtime_config(BASE + b"health: {listen: 127.0.0.1:9100}\n", tmp_path)
    assert config.health is not None and config.health.listen == ("127.0.0.1", 9100)
    assert parse_runtime_config(BASE, tmp_path).health is None


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        (b"health: {listen: nowhere}", "health.listen", "expected HOST:PORT, got 'nowhere'"),
        (b"health: {}", "health.listen", "missing required field"),
        (b"health: {listen: 127.0.0.1:9100, secrets: yes}", "health.secrets", "unknown field"),
        (b"health: 127.0.0.1:9100", "health", "expected a mapping"),
    ],
)
def test_a_bad_health_setting_is_refused_naming_it(
    tmp_path: Path, line: bytes, field: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_runtime_config(BASE + line + b"\n", tmp_path)
    assert caught.value.field == field and problem in caught.value.problem
