"""The trust file: auditor public keys and the threshold, embedded in every enclave at build time.

::

    # teaclave-ma trust file
    threshold: 2
    auditors:
      - name: alice
        key_id: 9f86d0...       # hex SHA-256 of the raw public key; must match public_key
        public_key: |
          -----BEGIN PUBLIC KEY-----
          ...
    owners:                     # optional: who may put, rotate and delete kms secrets
      - name: ops               # same form as an auditor (Ed25519)
        public_key: |
          ...

The key id is stored beside the key so that a reviewer can compare it with what the auditor
publishes, and it is checked against the key on every load.
"""

from __future__ import annotations

import re

import attrs

from teaclave_ma.crypto.auditor_key import AuditorKeyError, AuditorPublicKey
from teaclave_ma.errors import ConfigError, InputError
from teaclave_ma.formats.strict import (
    dump_yaml,
    expect_int,
    expect_keys,
    expect_list,
    expect_mapping,
    expect_str,
    join,
    parse_yaml_mapping,
)

AUDITOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A few hundred bytes per auditor.
MAX_TRUST_BYTES = 1 << 20
HEADER = b"# teaclave-ma trust file: auditor public keys and threshold, embedded at build time\n"


class TrustFileError(ConfigError):
    """A trust file that must not be embedded or used."""


@attrs.frozen
class TrustedAuditor:
    name: str
    public_key: AuditorPublicKey

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


@attrs.frozen
class TrustFile:
    threshold: int
    auditors: tuple[TrustedAuditor, ...]
    # Secret owners (kms): measured like the auditors, since they decide what the kms holds.
    owners: tuple[TrustedAuditor, ...] = ()

    def __attrs_post_init__(self) -> None:
        count = len(self.auditors)
        if count == 0:
            raise TrustFileError("auditors", "at least one auditor is required")
        if not 1 <= self.threshold <= count:
            raise TrustFileError(
                "threshold",
                f"must be between 1 and the number of auditors ({count}), got {self.threshold}",
            )
        _refuse_duplicates(self.auditors, "auditors")
        _refuse_duplicates(self.owners, "owners")

    def by_key_id(self) -> dict[str, TrustedAuditor]:
        return {auditor.key_id: auditor for auditor in self.auditors}

    def owner_by_key_id(self) -> dict[str, TrustedAuditor]:
        return {owner.key_id: owner for owner in self.owners}

    def to_bytes(self) -> bytes:
        owners = {"owners": _key_documents(self.owners)} if self.owners else {}
        return HEADER + dump_yaml(
            {"threshold": self.threshold, "auditors": _key_documents(self.auditors), **owners}
        )


def _key_documents(keys: tuple[TrustedAuditor, ...]) -> list[dict[str, str]]:
    return [
        {"name": key.name, "key_id": key.key_id, "public_key": key.public_key.to_pem().decode()}
        for key in keys
    ]


def _refuse_duplicates(keys: tuple[TrustedAuditor, ...], field: str) -> None:
    seen_keys: dict[str, str] = {}
    seen_names: set[str] = set()
    for index, auditor in enumerate(keys):
        where = join(field, index)
        if auditor.key_id in seen_keys:
            raise TrustFileError(
                join(where, "public_key"),
                f"key {auditor.key_id[:16]}... of {auditor.name!r} is already listed "
                f"for {seen_keys[auditor.key_id]!r}; duplicate keys would inflate the threshold",
            )
        if auditor.name in seen_names:
            raise TrustFileError(
                join(where, "name"), f"auditor name {auditor.name!r} is listed twice"
            )
        seen_keys[auditor.key_id] = auditor.name
        seen_names.add(auditor.name)


def parse_trust_file(data: bytes, what: str = "trust file") -> TrustFile:
    try:
        mapping = parse_yaml_mapping(data, what, MAX_TRUST_BYTES)
        expect_keys(mapping, "", ["threshold", "auditors"], ["owners"])
        threshold = expect_int(mapping["threshold"], "threshold", 0, 1 << 16)
        return TrustFile(
            threshold=threshold,
            auditors=_parse_keys(mapping["auditors"], "auditors"),
            owners=_parse_keys(mapping.get("owners", []), "owners"),
        )
    except (AuditorKeyError, InputError) as exc:
        if exc.field == what:  # unreadable as a whole: the field already names the file
            raise TrustFileError(exc.field, exc.problem) from exc
        # A field error names the file too, so a user with several trust files knows which.
        raise TrustFileError(exc.field, f"{exc.problem} (in {what})") from exc


def _parse_keys(value: object, field: str) -> tuple[TrustedAuditor, ...]:
    auditors = []
    for index, item in enumerate(expect_list(value, field)):
        where = join(field, index)
        entry = expect_mapping(item, where)
        expect_keys(entry, where, ["name", "public_key"], ["key_id"])
        name = expect_str(entry["name"], join(where, "name"), AUDITOR_NAME)
        pem = expect_str(entry["public_key"], join(where, "public_key")).encode()
        public_key = AuditorPublicKey.from_pem(pem, join(where, "public_key"))
        if "key_id" in entry:
            stated = expect_str(entry["key_id"], join(where, "key_id"))
            if stated != public_key.key_id:
                raise TrustFileError(
                    join(where, "key_id"),
                    f"does not match the public key: stated {stated}, key has {public_key.key_id}",
                )
        auditors.append(TrustedAuditor(name, public_key))
    return tuple(auditors)
