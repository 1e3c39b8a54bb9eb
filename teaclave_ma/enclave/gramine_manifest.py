"""The Gramine manifest template that runs ``teaclave-ma serve`` on one image in a real SGX
enclave (Sans-IO: the verified image and the paths in, TOML text out).

What decides whom the service trusts is measured: the interpreter, the Python library
(teaclave-ma and its dependencies) and the image are ``sgx.trusted_files``, hashed into
MRENCLAVE by gramine-sgx-sign; argv and the environment are fixed here (no
``insecure__use_cmdline_argv``, no host environment). What the host supplies is an
``sgx.allowed_files`` entry: runtime.yaml, and the manifest with its signatures (verified
against the measured trust file). The state directory is an encrypted mount under the
sealing key named by service.yaml's ``state.seal_to``, so the host sees only ciphertext.

The ``{{ ... }}`` markers are gramine-manifest's template variables; every one sits inside
a TOML string, so the template itself parses as TOML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import attrs

from teaclave_ma.enclave.image import EnclaveImage

# Gramine's sealing keys (fs.mounts key_name) for service.yaml's state.seal_to.
SEALING_KEYS = {"mrsigner": "_sgx_mrsigner", "mrenclave": "_sgx_mrenclave"}

# The paths deploy/ uses (Kubernetes mounts and the Dockerfiles); runtime.yaml's state_dir
# must name STATE_DIR for the state to land in the encrypted mount.
RUNTIME_CONFIG = PurePosixPath("/etc/teaclave/runtime/runtime.yaml")
MANIFEST_DIR = PurePosixPath("/etc/teaclave/manifest")
STATE_DIR = PurePosixPath("/var/lib/teaclave/state")

TomlValue = str | int | bool | Sequence[object] | Mapping[str, object]


@attrs.frozen
class GramineLayout:
    """Where things are inside the enclave's file system (the same paths as in the
    container image, since Gramine mounts them through)."""

    python: PurePosixPath  # the interpreter itself (not a venv's link to it)
    python_dirs: tuple[PurePosixPath, ...]  # measured: stdlib, site-packages, the library
    image: PurePosixPath  # the built enclave image directory
    # PYTHONPATH: where teaclave_ma and its dependencies are found without a venv's
    # pyvenv.cfg beside the interpreter (Gramine runs the interpreter itself).
    python_path: tuple[PurePosixPath, ...] = ()
    runtime_config: PurePosixPath = RUNTIME_CONFIG
    manifest_dir: PurePosixPath = MANIFEST_DIR
    state_dir: PurePosixPath = STATE_DIR
    enclave_size: str = "2G"
    max_threads: int = 64
    # argv is measured, so the first start (which must say so) is its own build: a
    # different MRENCLAVE, the same MRSIGNER, so with seal_to: mrsigner the normal build
    # reads the state it created.
    initialize_state: bool = False


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | PurePosixPath):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[\n" + "".join(f"  {_toml(item)},\n" for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _file(path: PurePosixPath | str, directory: bool = False) -> str:
    # A trailing slash makes Gramine take every file below the directory.
    return f"file:{path}{'/' if directory else ''}"


def gramine_manifest(image: EnclaveImage, layout: GramineLayout) -> str:
    """The manifest template for ``image``; the SGX fields come from its verified
    enclave.json (the signed SIGSTRUCT record)."""
    enclave = image.service.enclave
    argv = [
        str(layout.python),
        "-m",
        "teaclave_ma.cli.main",
        "serve",
        str(layout.image),
        "--manifest",
        str(layout.manifest_dir / "manifest.yaml"),
        "--signatures",
        str(layout.manifest_dir),
        "--config",
        str(layout.runtime_config),
        *(["--initialize-state"] if layout.initialize_state else []),
    ]
    mounts: list[dict[str, str]] = [
        {"path": "/lib", "uri": "file:{{ gramine.runtimedir() }}"},
        {"path": "{{ arch_libdir }}", "uri": "file:{{ arch_libdir }}"},
        {"path": "/usr", "uri": "file:/usr"},
        *({"path": str(directory), "uri": _file(directory)} for directory in _outside_usr(layout)),
        {"path": str(layout.runtime_config.parent), "uri": _file(layout.runtime_config.parent)},
        {"path": str(layout.manifest_dir), "uri": _file(layout.manifest_dir)},
        {
            "path": str(layout.state_dir),
            "uri": _file(layout.state_dir),
            "type": "encrypted",
            "key_name": SEALING_KEYS[image.service.state.seal_to],
        },
        {"path": "/tmp", "type": "tmpfs"},  # noqa: S108 - inside the enclave, never the host's
    ]
    settings: list[tuple[str, TomlValue]] = [
        ("libos.entrypoint", str(layout.python)),
        ("loader.entrypoint", "file:{{ gramine.libos }}"),
        ("loader.log_level", "error"),
        ("loader.argv", argv),
        ("loader.env.LD_LIBRARY_PATH", "/lib:{{ arch_libdir }}:/usr{{ arch_libdir }}"),
        ("loader.env.PYTHONPATH", ":".join(map(str, layout.python_path))),
        ("loader.env.PYTHONDONTWRITEBYTECODE", "1"),  # trusted files are read-only
        ("loader.env.PYTHONNOUSERSITE", "1"),
        ("loader.env.PYTHONSAFEPATH", "1"),  # nothing from the working directory
        ("fs.mounts", mounts),
        # Peers are found by DNS name (Kubernetes services); who answers is attested anyway.
        ("sys.enable_extra_runtime_domain_names_conf", True),
        ("sgx.remote_attestation", "dcap"),
        ("sgx.isvprodid", enclave.isv_prod_id),
        ("sgx.isvsvn", enclave.isv_svn),
        ("sgx.debug", enclave.debug),
        ("sgx.enclave_size", layout.enclave_size),
        ("sgx.max_threads", layout.max_threads),
        ("sgx.file_check_policy", "strict"),
        (
            "sgx.trusted_files",
            [
                "file:{{ gramine.libos }}",
                "file:{{ gramine.runtimedir() }}/",
                "file:{{ arch_libdir }}/",
                "file:/usr{{ arch_libdir }}/",
                _file(layout.python),
                *(_file(directory, directory=True) for directory in layout.python_dirs),
                _file(layout.image, directory=True),
            ],
        ),
        (
            "sgx.allowed_files",
            [_file(layout.runtime_config), _file(layout.manifest_dir, directory=True)],
        ),
    ]
    header = (
        f"# Gramine manifest template for the teaclave-ma service {image.service.name!r}\n"
        f"# (image MRENCLAVE {image.identity.mr_enclave.hex()}), written by\n"
        "# `teaclave-ma gramine manifest`. Render and sign it with\n"
        "#   gramine-manifest -Darch_libdir=/lib/x86_64-linux-gnu THIS service.manifest\n"
        "#   gramine-sgx-sign --manifest service.manifest --output service.manifest.sgx\n"
        "# and add the resulting .sig to the manifest: teaclave-ma manifest add --from-sigstruct\n"
    )
    return header + "".join(f"{key} = {_toml(value)}\n" for key, value in settings)


def _outside_usr(layout: GramineLayout) -> list[PurePosixPath]:
    """The interpreter's directories and the image that /usr's mount does not cover."""
    usr = PurePosixPath("/usr")
    wanted = [*layout.python_dirs, *layout.python_path, layout.image]
    return [path for path in dict.fromkeys(wanted) if not path.is_relative_to(usr)]
