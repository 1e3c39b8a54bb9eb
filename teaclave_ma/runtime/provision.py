"""Init-time attestation (``teaclave-ma run``): prepare an application's working directory
before it starts, so that the application itself needs no attestation code.

The image's files are laid out in the provision directory named by runtime.yaml; sealed
files are decrypted there with the image's key from the kms; the secrets listed under
``provision`` in service.yaml are written there (mode 0600) or returned for the
environment. Everything is assembled in a private staging directory and moved into place
only when every step succeeded, so a failure leaves no half-provisioned directory behind.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.fsutil import atomic_write, replaced_directory
from teaclave_ma.runtime.service_runtime import EnclaveNode
from teaclave_ma.secrets.sealing import SUFFIX, sealing_secret_name, unseal_bytes

log = logging.getLogger(__name__)


def provision(node: EnclaveNode) -> tuple[Path, dict[str, str]]:
    """The provision directory and the environment variables the application gets."""
    service = node.image.service
    target = node.runtime.provision_dir
    if target is None:
        raise ConfigError(
            "provision_dir", "runtime.yaml must name the directory secrets may be written to"
        )
    with replaced_directory(target) as staging:
        environment = _assemble(node, staging)
    log.info("%s provisioned in %s", service.name, target)
    return target, environment


def _assemble(node: EnclaveNode, staging: Path) -> dict[str, str]:
    service = node.image.service
    content = node.image.content  # the verified bytes, not a second read of the files
    sealed = sorted(path for path in content if path.endswith(SUFFIX))
    key = node.context.secret(sealing_secret_name(service.name)) if sealed else None
    for path, data in content.items():
        if path.endswith(SUFFIX):
            assert key is not None
            atomic_write(
                staging / path.removesuffix(SUFFIX), unseal_bytes(key, data, path), mode=0o600
            )
        else:
            atomic_write(staging / path, data)
    environment: dict[str, str] = {}
    for secret in service.provision:
        value = node.context.secret(secret.name)
        if secret.file is not None:
            if (staging / secret.file).exists():
                raise ConfigError(
                    f"provision.{secret.name}.file",
                    f"{secret.file} would overwrite a file of the image",
                )
            atomic_write(staging / secret.file, value.reveal(), mode=0o600)
        elif secret.env is not None:
            try:
                environment[secret.env] = value.reveal().decode()
            except UnicodeDecodeError:
                raise InputError(
                    f"provision.{secret.name}.env",
                    "a secret passed in the environment must be UTF-8",
                ) from None
    return environment


def exec_application(directory: Path, command: list[str], environment: dict[str, str]) -> None:
    """Replace this process with the application, in its provisioned directory."""
    os.chdir(directory)
    os.umask(0o077)  # whatever the application writes stays private by default
    os.execvpe(command[0], command, {**os.environ, **environment})  # noqa: S606 - the operator's command
