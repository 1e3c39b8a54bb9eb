"""The kms's secret values file (mode 0600, atomically, validated): values only.

::

    secrets:
      token-key: {value: 3q2+7w==}    # base64

Who may receive a value is not this file's to say: that is the manifest's signed
``secrets:`` section, so a file naming ``allow`` or ``relax`` is refused.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from teaclave_ma.errors import InputError
from teaclave_ma.formats.manifest import SECRET_NAME
from teaclave_ma.formats.strict import (
    dump_yaml,
    expect_keys,
    expect_mapping,
    expect_str,
    join,
    parse_yaml_mapping,
)
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.secrets.policy import SecretValue

HEADER = b"# teaclave-ma kms secrets: values are base64. Keep this file readable by the kms only.\n"
POLICY_KEYS = ("allow", "min_config_svn", "relax")


class SecretsFileError(InputError):
    """A secrets file that cannot be used."""


def parse_secret_values(data: bytes, what: str = "secrets file") -> dict[str, SecretValue]:
    try:
        mapping = parse_yaml_mapping(data, what)
        expect_keys(mapping, "", ["secrets"])
        values = {}
        for name, item in expect_mapping(mapping["secrets"], "secrets").items():
            where = join("secrets", name)
            if not SECRET_NAME.fullmatch(name):
                raise SecretsFileError(
                    where, f"invalid secret name (expected {SECRET_NAME.pattern})"
                )
            entry = expect_mapping(item, where)
            for key in POLICY_KEYS:
                if key in entry:
                    raise SecretsFileError(
                        join(where, key),
                        "the release policy is signed: it belongs in the manifest's secrets: "
                        "section, and no host file can set it",
                    )
            expect_keys(entry, where, ["value"])
            encoded = expect_str(entry["value"], join(where, "value"))
            try:
                values[name] = SecretValue(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                raise SecretsFileError(join(where, "value"), "not valid base64") from None
        return values
    except SecretsFileError:
        raise
    except InputError as exc:
        # never echo a value back: the problem text names the field, not its content
        raise SecretsFileError(exc.field, exc.problem.split(", got ")[0]) from exc


def register_secret(path: Path, name: str, value: SecretValue) -> None:
    """Add or replace secret ``name``; the result is validated before it replaces the file."""
    path = Path(path)
    document = (
        parse_yaml_mapping(path.read_bytes(), str(path)) if path.exists() else {"secrets": {}}
    )
    secrets = dict(document.get("secrets") or {})
    secrets[name] = {"value": base64.b64encode(value.reveal()).decode()}
    data = HEADER + dump_yaml({**document, "secrets": secrets})
    parse_secret_values(data, str(path))
    atomic_write(path, data, mode=0o600)
