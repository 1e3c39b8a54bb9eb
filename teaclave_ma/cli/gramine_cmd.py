"""``teaclave-ma gramine``: run services in real SGX enclaves under Gramine."""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path, PurePosixPath
from typing import Any

import teaclave_ma
from teaclave_ma.cli.output import EXIT_OK, add_force_flag, add_json_flag, emit
from teaclave_ma.enclave.gramine_manifest import (
    MANIFEST_DIR,
    RUNTIME_CONFIG,
    STATE_DIR,
    GramineLayout,
    gramine_manifest,
)
from teaclave_ma.enclave.image import load_image
from teaclave_ma.errors import InputError
from teaclave_ma.fsutil import atomic_write


def register(subparsers: Any) -> None:
    gramine = subparsers.add_parser("gramine", help="real SGX enclaves under Gramine")
    commands = gramine.add_subparsers(dest="gramine_command", required=True, metavar="COMMAND")
    manifest = commands.add_parser(
        "manifest", help="write the Gramine manifest template that serves an image"
    )
    manifest.add_argument("image", type=Path, help="built enclave image directory")
    manifest.add_argument("--out", type=Path, required=True, help="manifest template to write")
    manifest.add_argument(
        "--image-path",
        help="the image's absolute path in the container (default: IMAGE, made absolute)",
    )
    manifest.add_argument(
        "--python",
        help="the interpreter's path in the container (default: this one's, links resolved)",
    )
    manifest.add_argument(
        "--python-dir",
        action="append",
        dest="python_dirs",
        metavar="DIR",
        help="a directory of Python code to measure (repeatable; default: this interpreter's "
        "standard library and the site-packages holding teaclave_ma)",
    )
    manifest.add_argument("--runtime-config", default=str(RUNTIME_CONFIG), help="runtime.yaml")
    manifest.add_argument(
        "--manifest-dir", default=str(MANIFEST_DIR), help="manifest.yaml and its *.sig files"
    )
    manifest.add_argument(
        "--state-dir",
        default=str(STATE_DIR),
        help="the encrypted state mount (runtime.yaml's state_dir)",
    )
    manifest.add_argument("--enclave-size", default="2G", help="sgx.enclave_size")
    manifest.add_argument("--max-threads", type=int, default=64, help="sgx.max_threads")
    manifest.add_argument(
        "--initialize-state",
        action="store_true",
        help="the first-start build: serve with --initialize-state (its own MRENCLAVE)",
    )
    add_force_flag(manifest)
    add_json_flag(manifest)
    manifest.set_defaults(func=_manifest)


def _absolute(value: str, flag: str) -> PurePosixPath:
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts:
        raise InputError(flag, f"expected an absolute path without '..', got {value!r}")
    return path


def _this_interpreter() -> tuple[str, list[str], list[str]]:
    """This interpreter, the directories to measure, and those to put on PYTHONPATH."""
    paths = sysconfig.get_paths()
    site = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    path = list(site)
    measured = [paths["stdlib"], paths["platstdlib"], *site]
    library = Path(teaclave_ma.__file__).resolve().parent
    if not any(library.is_relative_to(directory) for directory in site):
        # An editable install: the code is in the checkout, found through a .pth file,
        # which PYTHONPATH does not read.
        measured.append(str(library))
        path.append(str(library.parent))
    return str(Path(sys.executable).resolve()), list(dict.fromkeys(measured)), path


def _manifest(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    python, python_dirs, python_path = _this_interpreter()
    if args.max_threads < 4:
        raise InputError("--max-threads", f"the server needs at least 4, got {args.max_threads}")
    layout = GramineLayout(
        python=_absolute(args.python or python, "--python"),
        python_dirs=tuple(
            _absolute(directory, "--python-dir") for directory in args.python_dirs or python_dirs
        ),
        python_path=tuple(map(PurePosixPath, python_path)),
        image=_absolute(args.image_path or str(Path(args.image).resolve()), "--image-path"),
        runtime_config=_absolute(args.runtime_config, "--runtime-config"),
        manifest_dir=_absolute(args.manifest_dir, "--manifest-dir"),
        state_dir=_absolute(args.state_dir, "--state-dir"),
        enclave_size=args.enclave_size,
        max_threads=args.max_threads,
        initialize_state=args.initialize_state,
    )
    atomic_write(args.out, gramine_manifest(image, layout).encode(), overwrite=args.force)
    emit(
        args,
        {
            "template": str(args.out),
            "service": image.service.name,
            "python": str(layout.python),
            "trusted_dirs": [str(d) for d in (*layout.python_dirs, layout.image)],
            "state_dir": str(layout.state_dir),
        },
        [
            f"wrote {args.out}: Gramine manifest template serving {image.service.name}",
            f"  measured: {layout.python}, {', '.join(map(str, layout.python_dirs))}, "
            f"{layout.image}",
            f"  runtime.yaml's state_dir must be {layout.state_dir} (the encrypted mount)",
        ],
    )
    return EXIT_OK
