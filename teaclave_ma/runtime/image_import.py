"""Importing a service's Python code from its verified image, never from disk.

A service's code is a package: its image's ``.py`` files and subdirectories. It is
imported under a name unique to this load (``teaclave_service_<name>_<n>``), so two
services, or two starts of one, never share a module. Inside it, modules import each other
relatively (``from . import helpers``, ``from .store import Table``). Every module is
compiled from the bytes ``load_image`` measured: a file changed on disk afterwards is
never what runs, and no search path reaches the disk (every package's ``__path__`` is
empty, so nothing but this importer can resolve a name under the root).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

_loads = itertools.count(1)


class ImageImporter(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds and loads the modules under ``root`` from ``files`` (relative path -> bytes)."""

    def __init__(self, root: str, files: Mapping[str, bytes], code_dir: Path) -> None:
        self.root = root
        self._files = files
        self._code_dir = code_dir  # for tracebacks only: the source comes from ``files``

    @classmethod
    def install(cls, service: str, files: Mapping[str, bytes], code_dir: Path) -> ImageImporter:
        """A new importer for one service, first on ``sys.meta_path``."""
        root = f"teaclave_service_{re.sub(r'[^A-Za-z0-9_]', '_', service)}_{next(_loads)}"
        importer = cls(root, files, code_dir)
        sys.meta_path.insert(0, importer)
        return importer

    def uninstall(self) -> None:
        """Forget the importer and every module it loaded."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for name in [n for n in sys.modules if n == self.root or n.startswith(self.root + ".")]:
            del sys.modules[name]

    def import_module(self, relative: str) -> types.ModuleType:
        """``relative`` (``storage_service``, ``pkg.sub``) imported from the image."""
        return importlib.import_module(f"{self.root}.{relative}")

    def _locate(self, fullname: str) -> tuple[str | None, bool] | None:
        """(the file holding the module's code or None, whether it is a package), or None
        if the image holds no such module."""
        if fullname == self.root:
            return None, True
        if not fullname.startswith(self.root + "."):
            return None
        path = fullname[len(self.root) + 1 :].replace(".", "/")
        if f"{path}/__init__.py" in self._files:
            return f"{path}/__init__.py", True
        if f"{path}.py" in self._files:
            return f"{path}.py", False
        if any(name.startswith(path + "/") for name in self._files):
            return None, True  # a directory without __init__.py: a namespace of modules
        return None

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        found = self._locate(fullname)
        if found is None:
            return None
        relative, package = found
        origin = str(self._code_dir / relative) if relative else None
        spec = importlib.util.spec_from_loader(fullname, self, origin=origin, is_package=package)
        if spec is not None and package:
            spec.submodule_search_locations = []  # nothing on disk is ever searched
        if spec is not None:
            spec.has_location = relative is not None
        return spec

    def get_source(self, fullname: str) -> str | None:
        found = self._locate(fullname)
        if found is None or found[0] is None:
            return None
        return self._files[found[0]].decode("utf-8")

    def get_code(self, fullname: str) -> types.CodeType:
        found = self._locate(fullname)
        if found is None:
            raise ImportError(f"{fullname} is not in the image", name=fullname)
        relative = found[0]
        source = self._files[relative] if relative else b""
        filename = str(self._code_dir / relative) if relative else "<image package>"
        return compile(source, filename, "exec", dont_inherit=True)

    def is_package(self, fullname: str) -> bool:
        found = self._locate(fullname)
        return found is not None and found[1]

    def exec_module(self, module: types.ModuleType) -> None:
        code = self.get_code(module.__name__)
        exec(code, module.__dict__)  # noqa: S102 - the image's own, verified code
