"""Enclave images: a directory with ``content/`` (everything the enclave code can read,
all of it measured) and ``sigstruct.json`` (the author's signature over the measurement).

``content/`` holds the service's files as in its source directory, plus three files the
build adds at fixed paths: ``trust.yaml`` (the auditors' trust file, embedded so that it
is part of MRENCLAVE), ``enclave.json`` (the SGX fields a Gramine manifest carries) and
``attestation.json`` (the root of trust it was built for: Intel's, or one simulated
platform's).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path

import attrs

from teaclave_ma.crypto.author_key import load_author_private_key, load_author_public_key, mr_signer
from teaclave_ma.enclave import sigstruct
from teaclave_ma.enclave.attestation_profile import (
    INTEL_PROFILE,
    PROFILE_FILE,
    AttestationProfile,
    parse_profile,
)
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.enclave.measurement import describe_difference, mr_enclave, read_tree
from teaclave_ma.formats.service_config import EnclaveConfig, ServiceConfig, parse_service_config
from teaclave_ma.formats.trust import parse_trust_file
from teaclave_ma.fsutil import atomic_write, replaced_directory
from teaclave_ma.identity import SgxIdentity

CONTENT = "content"
SIGSTRUCT = sigstruct.SIGSTRUCT_FILE
TRUST_FILE = "trust.yaml"
ENCLAVE_CONFIG = "enclave.json"
SERVICE_CONFIG = "service.yaml"
RESERVED = (TRUST_FILE, ENCLAVE_CONFIG, PROFILE_FILE)


@attrs.frozen
class EnclaveImage:
    root: Path
    service: ServiceConfig
    identity: SgxIdentity
    trust_bytes: bytes
    profile: AttestationProfile = INTEL_PROFILE
    # The bytes that were measured and verified at load; code runs from these, not from a
    # second read of the files, which could have changed in between.
    content: Mapping[str, bytes] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def code_dir(self) -> Path:
        return self.root / CONTENT


def enclave_config_bytes(enclave: EnclaveConfig) -> bytes:
    document = {
        "sgx.isvprodid": enclave.isv_prod_id,
        "sgx.isvsvn": enclave.isv_svn,
        "sgx.config_svn": enclave.config_svn,
        "sgx.debug": enclave.debug,
    }
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def image_content(
    service_dir: Path, trust_path: Path, profile: AttestationProfile = INTEL_PROFILE
) -> tuple[dict[str, bytes], ServiceConfig]:
    """What a build of ``service_dir`` with ``trust_path`` for ``profile``'s root of trust
    puts into ``content/``."""
    content = read_tree(Path(service_dir))
    for reserved in RESERVED:
        if reserved in content:
            raise ImageFormatError(
                reserved, "this name is reserved for what the build adds; rename the file"
            )
    if SERVICE_CONFIG not in content:
        raise ImageFormatError(str(service_dir), f"no {SERVICE_CONFIG}")
    service = parse_service_config(content[SERVICE_CONFIG], str(Path(service_dir) / SERVICE_CONFIG))
    trust_bytes = Path(trust_path).read_bytes()
    parse_trust_file(trust_bytes, str(trust_path))  # a bad trust file is refused at build time
    content[TRUST_FILE] = trust_bytes
    content[ENCLAVE_CONFIG] = enclave_config_bytes(service.enclave)
    content[PROFILE_FILE] = profile.to_bytes()
    return content, service


def check_service_code(content: Mapping[str, bytes], service: ServiceConfig) -> None:
    """Refuse, at build time, code that could never serve: every ``.py`` file must compile,
    and the entrypoint's module must exist and define its function at top level (the
    runtime compiles that module from the image and calls the function)."""
    for relative, data in sorted(content.items()):
        if relative.endswith(".py"):
            try:
                compile(data, relative, "exec", dont_inherit=True)
            except SyntaxError as exc:
                raise ImageFormatError(
                    f"{relative}, line {exc.lineno}", f"does not compile: {exc.msg}"
                ) from None
            except ValueError as exc:  # null bytes
                raise ImageFormatError(relative, f"does not compile: {exc}") from None
    if service.entrypoint is None:
        return
    module_name, function_name = service.entrypoint.split(":")
    source = content.get(f"{module_name}.py")
    if source is None:
        raise ImageFormatError(
            "entrypoint", f"{service.entrypoint}: there is no {module_name}.py in the service"
        )
    if function_name not in _top_level_names(ast.parse(source)):
        raise ImageFormatError(
            "entrypoint",
            f"{service.entrypoint}: {module_name}.py defines no top-level {function_name!r}",
        )


def _top_level_names(module: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(
                name.id
                for target in targets
                for name in ast.walk(target)
                if isinstance(name, ast.Name)
            )
    return names


def _identity(measurement: bytes, signer: bytes, enclave: EnclaveConfig) -> SgxIdentity:
    return SgxIdentity(
        mr_enclave=measurement,
        mr_signer=signer,
        isv_prod_id=enclave.isv_prod_id,
        isv_svn=enclave.isv_svn,
        debug=enclave.debug,
        config_svn=enclave.config_svn,
    )


def measure_source(
    service_dir: Path,
    trust_path: Path,
    author_key_path: Path,
    profile: AttestationProfile = INTEL_PROFILE,
) -> SgxIdentity:
    """The identity a build would have, computed without writing anything."""
    content, service = image_content(service_dir, trust_path, profile)
    return _identity(
        mr_enclave(content), mr_signer(load_author_public_key(author_key_path)), service.enclave
    )


def build_image(
    service_dir: Path,
    trust_path: Path,
    signing_key_path: Path,
    out_dir: Path,
    *,
    profile: AttestationProfile = INTEL_PROFILE,
    now: dt.datetime | None = None,
) -> EnclaveImage:
    """Build into a temporary directory beside ``out_dir``, then move it into place."""
    content, service = image_content(service_dir, trust_path, profile)
    key = load_author_private_key(signing_key_path)
    measurement = mr_enclave(content)
    record = sigstruct.sign(key, measurement, service.enclave, now or dt.datetime.now(dt.UTC))
    with replaced_directory(out_dir) as staging:
        for relative, data in content.items():
            atomic_write(staging / CONTENT / relative, data)
        atomic_write(staging / SIGSTRUCT, record.to_bytes())
    return load_image(out_dir)


def load_image(path: Path) -> EnclaveImage:
    """Load an image and check it: signature, measurement, and config against the record."""
    root = Path(path)
    try:
        record = sigstruct.parse_sigstruct((root / SIGSTRUCT).read_bytes(), str(root / SIGSTRUCT))
    except FileNotFoundError:
        raise ImageFormatError(str(root), f"not an enclave image (no {SIGSTRUCT})") from None
    record.verify()
    content = read_tree(root / CONTENT)
    measured = mr_enclave(content)
    if measured != record.mr_enclave:
        raise ImageError(
            "image_integrity",
            f"image content no longer matches its signed measurement: MRENCLAVE {measured.hex()} "
            f"!= signed {record.mr_enclave.hex()}",
        )
    for required in (SERVICE_CONFIG, TRUST_FILE, ENCLAVE_CONFIG, PROFILE_FILE):
        if required not in content:
            raise ImageFormatError(required, "missing from the image")
    service = parse_service_config(content[SERVICE_CONFIG], f"{root}/{CONTENT}/{SERVICE_CONFIG}")
    if (
        content[ENCLAVE_CONFIG] != enclave_config_bytes(record.enclave)
        or service.enclave != record.enclave
    ):
        raise ImageError(
            "image_integrity", "enclave config differs from the signed SIGSTRUCT fields"
        )
    parse_trust_file(content[TRUST_FILE], f"{root}/{CONTENT}/{TRUST_FILE}")
    return EnclaveImage(
        root,
        service,
        _identity(record.mr_enclave, record.mr_signer, record.enclave),
        content[TRUST_FILE],
        parse_profile(content[PROFILE_FILE], f"{root}/{CONTENT}/{PROFILE_FILE}"),
        content,
    )


def review(service_dir: Path, trust_path: Path, image: EnclaveImage) -> SgxIdentity:
    """An auditor's rebuild: the image must be exactly what the source builds to, for the
    root of trust the image says it was built for (which the auditor is shown)."""
    content, _service = image_content(service_dir, trust_path, image.profile)
    image_files: Mapping[str, bytes] = read_tree(image.code_dir)
    if mr_enclave(content) != image.identity.mr_enclave:
        raise ImageError(
            "review",
            f"{image.service.name}: rebuilding from {service_dir} does not reproduce the image's MRENCLAVE "
            f"({describe_difference(content, image_files)})",
        )
    return image.identity
