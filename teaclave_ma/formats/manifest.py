"""The enclave identity manifest: what auditors sign.

::

    version: 7                        # monotonic; services refuse to go back
    issued: "2026-12-01T00:00:00Z"    # optional; signed, so a service's clock never reads earlier
    expires: "2027-01-01T00:00:00Z"   # UTC; services refuse an expired manifest
    enclaves:
      storage:                        # service name -> accepted identities
        - mr_enclave: 3f2a...         # 64 hex
          mr_signer: 83d7...          # 64 hex
          isv_prod_id: 3
          min_isv_svn: 1
          debug: false                # optional, default false

A list per service lets two builds be accepted during a rolling upgrade. The file's exact
bytes are what auditors sign; this module only parses bytes that were already verified.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import attrs

from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import SERVICE_NAME
from teaclave_ma.formats.strict import (
    decode_document,
    dump_yaml,
    expect_bool,
    expect_hex,
    expect_int,
    expect_keys,
    expect_list,
    expect_mapping,
    expect_utc_time,
    format_utc,
    join,
    load_yaml_mapping,
    plain_scalar_is_str,
)
from teaclave_ma.identity import TD_ATTRIBUTES_DEBUG, PeerMeasurement, SgxIdentity, TdxIdentity


class ManifestFormatError(InputError):
    """A manifest document that does not follow the schema."""


@attrs.frozen
class AcceptedIdentity:
    """One measurement that auditors accept for a service."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    min_isv_svn: int
    debug: bool = False

    def mismatch(self, identity: PeerMeasurement) -> str | None:
        """Why ``identity`` does not match this entry (first differing field), or None."""
        if not isinstance(identity, SgxIdentity):
            return "the peer is a TDX guest; this is an SGX entry"
        if identity.mr_enclave != self.mr_enclave:
            return (
                f"mr_enclave {identity.mr_enclave.hex()[:16]}... != {self.mr_enclave.hex()[:16]}..."
            )
        if identity.mr_signer != self.mr_signer:
            return f"mr_signer {identity.mr_signer.hex()[:16]}... != {self.mr_signer.hex()[:16]}..."
        if identity.isv_prod_id != self.isv_prod_id:
            return f"isv_prod_id {identity.isv_prod_id} != {self.isv_prod_id}"
        if identity.isv_svn < self.min_isv_svn:
            return f"isv_svn {identity.isv_svn} < min_isv_svn {self.min_isv_svn}"
        if identity.debug != self.debug:
            return f"debug {str(identity.debug).lower()} != {str(self.debug).lower()}"
        return None

    def to_document(self) -> dict[str, object]:
        return {
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "min_isv_svn": self.min_isv_svn,
            "debug": self.debug,
        }


@attrs.frozen
class AcceptedTdIdentity:
    """One TDX guest measurement that auditors accept for a service (the manifest's tdx form)."""

    mr_td: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    td_attributes: bytes
    xfam: bytes

    def mismatch(self, identity: PeerMeasurement) -> str | None:
        if not isinstance(identity, TdxIdentity):
            return "the peer is an SGX enclave; this is a TDX entry"
        for name in TD_FIELDS:
            have, want = getattr(identity, name), getattr(self, name)
            if have != want:
                return f"{name} {have.hex()[:16]}... != {want.hex()[:16]}..."
        return None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    def to_document(self) -> dict[str, object]:
        return {name: getattr(self, name).hex() for name in TD_FIELDS}


TD_FIELDS = ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "td_attributes", "xfam")
Accepted = AcceptedIdentity | AcceptedTdIdentity


@attrs.frozen
class Manifest:
    version: int
    expires: dt.datetime
    enclaves: Mapping[str, tuple[Accepted, ...]]
    # Optional so that manifests signed before the field existed keep their exact bytes.
    issued: dt.datetime | None = None

    def to_bytes(self) -> bytes:
        issued = {} if self.issued is None else {"issued": format_utc(self.issued)}
        return dump_yaml(
            {
                "version": self.version,
                **issued,
                "expires": format_utc(self.expires),
                "enclaves": {
                    name: [entry.to_document() for entry in entries]
                    for name, entries in sorted(self.enclaves.items())
                },
            }
        )

    def with_entry(self, service: str, entry: Accepted) -> Manifest:
        """A copy with ``entry`` accepted for ``service`` (no-op if already there)."""
        if not SERVICE_NAME.fullmatch(service):
            raise ManifestFormatError("enclaves", f"invalid service name {service!r}")
        entries = self.enclaves.get(service, ())
        if entry in entries:
            return self
        return attrs.evolve(self, enclaves={**self.enclaves, service: (*entries, entry)})


def _parse_entry(value: object, path: str) -> Accepted:
    mapping = expect_mapping(value, path)
    if "mr_td" in mapping:
        expect_keys(mapping, path, TD_FIELDS)
        fields = {
            name: expect_hex(mapping[name], join(path, name), _TD_SIZES.get(name, 48))
            for name in TD_FIELDS
        }
        return AcceptedTdIdentity(**fields)
    expect_keys(mapping, path, ["mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn"], ["debug"])
    return AcceptedIdentity(
        mr_enclave=expect_hex(mapping["mr_enclave"], join(path, "mr_enclave"), 32),
        mr_signer=expect_hex(mapping["mr_signer"], join(path, "mr_signer"), 32),
        isv_prod_id=expect_int(mapping["isv_prod_id"], join(path, "isv_prod_id"), 0, _U16),
        min_isv_svn=expect_int(mapping["min_isv_svn"], join(path, "min_isv_svn"), 0, _U16),
        debug=expect_bool(mapping.get("debug", False), join(path, "debug")),
    )


_TD_SIZES = {"td_attributes": 8, "xfam": 8}
_U16 = 0xFFFF
_MAX_VERSION = (1 << 63) - 1
# 1,000 services take about 230 kB; the limit leaves room for tens of thousands.
MAX_MANIFEST_BYTES = 16 << 20


def parse_manifest(data: bytes, what: str = "manifest") -> Manifest:
    """The manifest in ``data``: read from its canonical layout when it is in it, by the
    general strict YAML reader otherwise (which also words every error)."""
    try:
        text = decode_document(data, what, MAX_MANIFEST_BYTES)
        return read_canonical(text) or read_general(text, what)
    except ManifestFormatError:
        raise
    except InputError as exc:
        raise ManifestFormatError(exc.field, exc.problem) from exc


def read_general(text: str, what: str = "manifest") -> Manifest:
    """Any YAML spelling of a manifest, through the strict YAML loader."""
    mapping = load_yaml_mapping(text, what)
    expect_keys(mapping, "", ["version", "expires", "enclaves"], ["issued"])
    enclaves: dict[str, tuple[Accepted, ...]] = {}
    for name, entries in expect_mapping(mapping["enclaves"], "enclaves").items():
        where = join("enclaves", name)
        if not SERVICE_NAME.fullmatch(name):
            raise InputError(where, f"invalid service name (expected {SERVICE_NAME.pattern})")
        items = expect_list(entries, where)
        if not items:
            raise InputError(where, "expected at least one accepted identity")
        enclaves[name] = tuple(_parse_entry(item, join(where, i)) for i, item in enumerate(items))
    expires = expect_utc_time(mapping["expires"], "expires")
    issued = expect_utc_time(mapping["issued"], "issued") if "issued" in mapping else None
    if issued is not None and issued >= expires:
        raise InputError(
            "issued", f"{format_utc(issued)} is not before expires {format_utc(expires)}"
        )
    return Manifest(
        version=expect_int(mapping["version"], "version", 0, _MAX_VERSION),
        expires=expires,
        enclaves=enclaves,
        issued=issued,
    )


# -- the canonical layout -------------------------------------------------------------------
#
# ``Manifest.to_bytes`` always writes the same block layout (PyYAML's, keys in schema order,
# one line per field). The generic YAML loader spends ~50 us per entry building and then
# checking Python objects; reading that one layout with regular expressions and building the
# typed entries directly is about ten times faster. The reader is deliberately narrow: it
# takes a document only if every line is exactly as ``to_bytes`` would write it (plain or
# single-quoted scalars that YAML reads as strings, decimal integers without leading zeros,
# lower-case booleans, no comments, no duplicate services), and returns None for anything
# else, so every other spelling and every error goes through ``read_general``. For any text
# it accepts, both readers give the same Manifest (tests/trust/test_formats.py checks this
# on generated and mutated documents).


def _hex_line(name: str, nbytes: int, indent: str = "    ") -> str:
    # Single-quoted, or plain but not a string YAML reads as an integer (NUMBER_LIKE_HEX).
    quote = f"q_{name}"
    return (
        rf"{indent}{name}: (?P<{quote}>')?(?({quote})|(?!{NUMBER_LIKE_HEX}\n))"
        rf"(?P<{name}>[0-9a-fA-F]{{{2 * nbytes}}})(?({quote})')\n"
    )


# The hex strings that YAML 1.1 reads as integers when unquoted (binary, octal, decimal
# without a leading zero: "08" is a string); no other hex string matches any of its
# implicit types (floats need a dot, timestamps a dash). Tested against PyYAML's resolvers.
NUMBER_LIKE_HEX = "(?:0b[01]+|0[0-7]*|[1-9][0-9]*)"


_NAME = SERVICE_NAME.pattern
# Decimal without leading zeros (YAML reads "010" as octal), short enough that int() of it
# is cheap; the ranges are checked after.
_VERSION = r"0|[1-9][0-9]{0,18}"
_U16_DIGITS = r"0|[1-9][0-9]{0,4}"
_CANONICAL_HEAD = re.compile(
    rf"version: (?P<version>{_VERSION})\n"
    r"expires: '(?P<expires>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)'\n"
    r"enclaves:(?P<empty> \{\})?\n"
)
_CANONICAL_ITEM = re.compile(
    # a service header, an SGX entry or a TDX entry, each a whole number of lines
    rf"  (?:'(?P<quoted_service>{_NAME})'|(?P<service>{_NAME})):\n"
    + "|"
    + _hex_line("mr_enclave", 32, "  - ")
    + _hex_line("mr_signer", 32)
    + rf"    isv_prod_id: (?P<isv_prod_id>{_U16_DIGITS})\n"
    rf"    min_isv_svn: (?P<min_isv_svn>{_U16_DIGITS})\n"
    r"(?:    debug: (?P<debug>true|false)\n)?"
    + "|"
    + _hex_line("mr_td", 48, "  - ")
    + "".join(_hex_line(name, _TD_SIZES.get(name, 48)) for name in TD_FIELDS[1:])
)


def read_canonical(text: str) -> Manifest | None:
    """The manifest if ``text`` is in the canonical layout (see above), else None."""
    head = _CANONICAL_HEAD.match(text)
    if head is None:
        return None
    version = int(head["version"])
    try:
        expires = expect_utc_time(head["expires"], "expires")
    except InputError:
        return None
    if version > _MAX_VERSION:
        return None
    enclaves: dict[str, list[Accepted]] = {}
    entries: list[Accepted] | None = None
    position = head.end()
    for item in _CANONICAL_ITEM.finditer(text, position):
        if item.start() != position:
            return None
        position = item.end()
        mr_enclave, mr_signer, isv_prod_id, min_isv_svn, debug, mr_td, service = item.group(
            "mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn", "debug", "mr_td", "service"
        )
        if mr_enclave is not None:
            prod_id, svn = int(isv_prod_id), int(min_isv_svn)
            if entries is None or prod_id > _U16 or svn > _U16:
                return None
            entries.append(
                AcceptedIdentity(
                    bytes.fromhex(mr_enclave),
                    bytes.fromhex(mr_signer),
                    prod_id,
                    svn,
                    debug == "true",
                )
            )
        elif mr_td is not None:
            if entries is None:
                return None
            entries.append(AcceptedTdIdentity(*(bytes.fromhex(item[name]) for name in TD_FIELDS)))
        else:
            if entries == [] or (service is not None and not plain_scalar_is_str(service)):
                return None  # a service without entries, or a name YAML reads as a boolean
            service = service or item["quoted_service"]
            if service in enclaves:
                return None  # read_general words the duplicate
            entries = enclaves[service] = []
    if position != len(text) or entries == [] or (head["empty"] is not None) != (not enclaves):
        return None
    return Manifest(
        version=version,
        expires=expires,
        enclaves={name: tuple(items) for name, items in enclaves.items()},
    )
