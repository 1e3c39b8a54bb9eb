"""A ConfigMap volume as the kubelet keeps it (its atomic writer), for tests.

The visible files are links through ``..data`` to one timestamped directory; an update
writes a new timestamped directory, points ``..data_tmp`` at it, renames that over
``..data`` (the one atomic step), then adds links for new keys, removes links of dropped
keys, and deletes the old directory."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


class ConfigMapVolume:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._generation = 0

    def _new_generation_dir(self, files: Mapping[str, bytes]) -> str:
        self._generation += 1
        # The kubelet's names: ..YYYY_MM_DD_HH_MM_SS. and a random suffix; a counter
        # stands in for the randomness so that two updates in one second differ too.
        stamp = dt.datetime(2026, 12, 2, 20, 0, 0) + dt.timedelta(seconds=self._generation)
        name = f"..{stamp:%Y_%m_%d_%H_%M_%S}.{self._generation:09d}"
        directory = self.root / name
        directory.mkdir(mode=0o755)
        for key, data in files.items():
            (directory / key).write_bytes(data)
            (directory / key).chmod(0o644)
        return name

    def keys(self) -> set[str]:
        data = self.root / DATA
        return {path.name for path in data.iterdir()} if data.exists() else set()

    def write(self, files: Mapping[str, bytes]) -> None:
        """Publish ``files`` (ConfigMap key -> bytes) as the new generation."""
        old_keys = self.keys()
        old_dir = os.readlink(self.root / DATA) if (self.root / DATA).is_symlink() else None
        new_dir = self._new_generation_dir(files)
        os.symlink(new_dir, self.root / DATA_TMP)
        os.rename(self.root / DATA_TMP, self.root / DATA)
        for key in files.keys() - old_keys:
            os.symlink(f"{DATA}/{key}", self.root / key)
        for key in old_keys - files.keys():
            (self.root / key).unlink()
        if old_dir is not None:
            for path in (self.root / old_dir).iterdir():
                path.unlink()
            (self.root / old_dir).rmdir()
