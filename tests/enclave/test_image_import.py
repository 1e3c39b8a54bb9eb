"""A service's code may be a package: siblings and subpackages imported from the verified image."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from teaclave_ma.enclave.errors import ImageError
from teaclave_ma.enclave.image import build_image, load_image
from teaclave_ma.rpc.service import Service
from teaclave_ma.runtime.context import ServiceContext
from teaclave_ma.runtime.image_import import ImageImporter
from teaclave_ma.runtime.service_runtime import load_entrypoint
from tests.enclave.conftest import Author
from tests.rpc.test_jsonrpc import PEER

SERVICE_YAML = """\
name: shelf
entrypoint: shelf_service:build
enclave: {isv_prod_id: 9, isv_svn: 1}
"""
ENTRY = """\
from teaclave_ma import Service

from . import helpers
from .store.table import Table


def build(context):
    service = Service(context.name)
    table = Table()

    @service.handler()
    def put(peer, key: str) -> str:
        table.add(key)
        return helpers.shout(key)

    @service.handler()
    def where(peer) -> list[str]:
        return [helpers.__name__, Table.__module__, helpers.MARK]

    return service
"""


@pytest.fixture
def package_image(tmp_path: Path, author: Author, trust: Path) -> Path:
    source = tmp_path / "src"
    (source / "store").mkdir(parents=True)
    (source / "service.yaml").write_text(SERVICE_YAML)
    (source / "shelf_service.py").write_text(ENTRY)
    (source / "helpers.py").write_text("MARK = 'measured'\n\ndef shout(s):\n    return s.upper()\n")
    (source / "store" / "__init__.py").write_text("")
    (source / "store" / "table.py").write_text(
        "class Table:\n    def __init__(self):\n        self.keys = []\n\n"
        "    def add(self, key):\n        self.keys.append(key)\n"
    )
    out = tmp_path / "image"
    build_image(source, trust, author.path, out)
    return out


def build_service(image_dir: Path, tmp_path: Path) -> tuple[Service, ImageImporter]:
    image = load_image(image_dir)
    importer = ImageImporter.install("shelf", image.content, image.code_dir)
    context = ServiceContext(name="shelf", state_dir=tmp_path, peers={})
    return load_entrypoint(image, importer)(context), importer


def test_a_service_imports_a_sibling_module_and_a_subpackage(
    package_image: Path, tmp_path: Path
) -> None:
    service, importer = build_service(package_image, tmp_path)
    try:
        assert service.dispatch(PEER, "put", {"key": "abc"}) == "ABC"
        helpers, table, mark = service.dispatch(PEER, "where", {})
        assert helpers == f"{importer.root}.helpers"
        assert table == f"{importer.root}.store.table"
        assert mark == "measured"
    finally:
        importer.uninstall()
    assert not [name for name in sys.modules if name.startswith(importer.root)]


def test_two_loads_of_one_service_share_no_module(package_image: Path, tmp_path: Path) -> None:
    _first, one = build_service(package_image, tmp_path)
    _second, two = build_service(package_image, tmp_path)
    try:
        assert one.root != two.root
        assert sys.modules[f"{one.root}.helpers"] is not sys.modules[f"{two.root}.helpers"]
    finally:
        one.uninstall()
        two.uninstall()


def test_a_tampered_module_file_is_refused_at_load(package_image: Path) -> None:
    (package_image / "content" / "store" / "table.py").write_text("class Table: pass\n")
    with pytest.raises(ImageError, match="no longer matches its signed measurement"):
        load_image(package_image)


def test_a_module_changed_on_disk_after_load_is_not_what_runs(
    package_image: Path, tmp_path: Path
) -> None:
    image = load_image(package_image)
    (image.code_dir / "helpers.py").write_text("MARK = 'swapped'\n")
    (image.code_dir / "store" / "table.py").write_text("raise RuntimeError('swapped')\n")
    importer = ImageImporter.install("shelf", image.content, image.code_dir)
    try:
        context = ServiceContext(name="shelf", state_dir=tmp_path, peers={})
        service = load_entrypoint(image, importer)(context)
        assert service.dispatch(PEER, "where", {})[2] == "measured"
    finally:
        importer.uninstall()


def test_a_module_the_image_lacks_is_not_found_on_disk(package_image: Path, tmp_path: Path) -> None:
    image = load_image(package_image)
    (image.code_dir / "extra.py").write_text("VALUE = 1\n")  # beside the image, unmeasured
    importer = ImageImporter.install("shelf", image.content, image.code_dir)
    try:
        with pytest.raises(ModuleNotFoundError):
            importer.import_module("extra")
    finally:
        importer.uninstall()
