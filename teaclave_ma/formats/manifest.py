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
          fmspcs: [00906ED50000]      # optional: only peers on these platform models
          ppids: [...]                # optional: only peers on these platforms (16 bytes hex)
    secrets:                          # optional: the kms release policy, signed with the rest
      token-key:
        allow: [authentication]       # services that may receive it
        min_config_svn: 0             # optional
        relax:                        # optional: checks turned off, each with its reason
          verify_config_svn: "authentication has no configuration versions yet"

A list per service lets two builds be accepted during a rolling upgrade. The file's exact
bytes are what auditors sign; this module only parses bytes that were already verified.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import attrs

from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import (
    OWNERS_EDGE,
    SERVICE_NAME,
    raise_duplicate,
    refuse_owners_edge,
    service_name,
)
from teaclave_ma.formats.strict import (
    decode_document,
    dump_yaml,
    expect_bool,
    expect_hex,
    expect_int,
    expect_keys,
    expect_list,
    expect_mapping,
    expect_str,
    expect_utc_time,
    format_utc,
    join,
    load_yaml_mapping,
)
from teaclave_ma.identity import (
    TD_ATTRIBUTES_DEBUG,
    PeerMeasurement,
    Platform,
    SgxIdentity,
    TdxIdentity,
)


class ManifestFormatError(InputError):
    """A manifest document that does not follow the schema."""


SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9_./-]{0,127}")
# The release checks, the same switches as Occlum's RA verify config; all on by default.
RELEASE_CHECKS = (
    "verify_mr_enclave",
    "verify_mr_signer",
    "verify_isv_prod_id",
    "verify_isv_svn",
    "verify_config_svn",
    "verify_enclave_debuggable",
)


@attrs.frozen
class SecretRelease:
    """Who may receive one kms secret: signed by the auditors, so no host file decides it."""

    allow: tuple[str, ...]
    min_config_svn: int = 0
    relaxed: Mapping[str, str] = attrs.field(factory=dict)  # check -> reason

    def to_document(self) -> dict[str, object]:
        document: dict[str, object] = {"allow": list(self.allow)}
        if self.min_config_svn:
            document["min_config_svn"] = self.min_config_svn
        if self.relaxed:
            document["relax"] = dict(self.relaxed)
        return document


@attrs.frozen
class PlatformPins:
    """The platforms an entry admits, from the PCK certificate of the peer's quote: any, or
    only those whose FMSPC is in ``fmspcs`` and (each list is optional) whose PPID is in
    ``ppids``. An empty tuple pins nothing."""

    fmspcs: tuple[bytes, ...] = ()
    ppids: tuple[bytes, ...] = ()

    def mismatch(self, platform: Platform | None, where: str = "") -> str | None:
        """Why ``platform`` is not admitted (``where`` names the entry), or None. An unknown
        platform is admitted only by an entry that pins none."""
        for name, allowed in (("fmspcs", self.fmspcs), ("ppids", self.ppids)):
            if not allowed:
                continue
            if platform is None:
                return f"{join(where, name)}: the peer's platform is not known"
            have: bytes = getattr(platform, name[:-1])  # fmspcs -> Platform.fmspc
            if have not in allowed:
                return (
                    f"{join(where, name)}: the peer's {name[:-1]} {have.hex()} is not listed "
                    f"(expected {' or '.join(value.hex() for value in allowed)})"
                )
        return None

    def to_document(self) -> dict[str, object]:
        # Written only when set, so an entry without pins keeps its bytes.
        return {
            name: [value.hex() for value in values]
            for name, values in (("fmspcs", self.fmspcs), ("ppids", self.ppids))
            if values
        }


PIN_FIELDS = {"fmspcs": 6, "ppids": 16}  # field -> bytes per value
_NO_PINS = PlatformPins()


def parse_hex_list(value: object, path: str, nbytes: int) -> tuple[bytes, ...]:
    """A non-empty list of distinct hex values of ``nbytes`` bytes each."""
    items = expect_list(value, path)
    if not items:
        raise InputError(path, "an empty list admits nothing; leave the field out to admit any")
    values = tuple(expect_hex(item, join(path, i), nbytes) for i, item in enumerate(items))
    if len(set(values)) != len(values):
        raise_duplicate(tuple(value.hex() for value in values), path)
    return values


def _parse_pins(mapping: Mapping[str, object], path: str) -> PlatformPins:
    if not PIN_FIELDS.keys() & mapping.keys():
        return _NO_PINS  # most entries: no pins, no work
    return PlatformPins(
        **{
            name: parse_hex_list(mapping[name], join(path, name), nbytes)
            for name, nbytes in PIN_FIELDS.items()
            if name in mapping
        }
    )


@attrs.frozen
class AcceptedIdentity:
    """One measurement that auditors accept for a service."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    min_isv_svn: int
    debug: bool = False
    pins: PlatformPins = attrs.field(factory=PlatformPins, kw_only=True)

    def mismatch(
        self, identity: PeerMeasurement, platform: Platform | None = None, where: str = ""
    ) -> str | None:
        """Why ``identity`` on ``platform`` does not match this entry (first differing
        field; ``where`` names the entry), or None."""
        return self._measurement_mismatch(identity) or self.pins.mismatch(platform, where)

    def _measurement_mismatch(self, identity: PeerMeasurement) -> str | None:
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
            **self.pins.to_document(),
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
    pins: PlatformPins = attrs.field(factory=PlatformPins, kw_only=True)

    def mismatch(
        self, identity: PeerMeasurement, platform: Platform | None = None, where: str = ""
    ) -> str | None:
        if not isinstance(identity, TdxIdentity):
            return "the peer is an SGX enclave; this is a TDX entry"
        for name in TD_FIELDS:
            have, want = getattr(identity, name), getattr(self, name)
            if have != want:
                return f"{name} {have.hex()[:16]}... != {want.hex()[:16]}..."
        return self.pins.mismatch(platform, where)

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    def to_document(self) -> dict[str, object]:
        return {
            **{name: getattr(self, name).hex() for name in TD_FIELDS},
            **self.pins.to_document(),
        }


TD_FIELDS = ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "td_attributes", "xfam")
Accepted = AcceptedIdentity | AcceptedTdIdentity


@attrs.frozen
class Manifest:
    version: int
    expires: dt.datetime
    enclaves: Mapping[str, tuple[Accepted, ...]]
    # Optional so that manifests signed before the field existed keep their exact bytes.
    issued: dt.datetime | None = None
    secrets: Mapping[str, SecretRelease] = attrs.field(factory=dict)

    def to_bytes(self) -> bytes:
        issued = {} if self.issued is None else {"issued": format_utc(self.issued)}
        released = {
            "secrets": {name: rule.to_document() for name, rule in sorted(self.secrets.items())}
        }
        return dump_yaml(
            {
                "version": self.version,
                **issued,
                "expires": format_utc(self.expires),
                "enclaves": {
                    name: [entry.to_document() for entry in entries]
                    for name, entries in sorted(self.enclaves.items())
                },
                **(released if self.secrets else {}),
            }
        )

    def with_entry(self, service: str, entry: Accepted) -> Manifest:
        """A copy with ``entry`` accepted for ``service`` (no-op if already there)."""
        if not SERVICE_NAME.fullmatch(service) or service == OWNERS_EDGE:
            raise ManifestFormatError("enclaves", f"invalid service name {service!r}")
        entries = self.enclaves.get(service, ())
        if entry in entries:
            return self
        return attrs.evolve(self, enclaves={**self.enclaves, service: (*entries, entry)})

    def with_release(self, name: str, document: object) -> Manifest:
        """A copy whose ``secrets:`` rule for ``name`` is ``document`` (the form the manifest
        holds), read by the manifest's own reader; replaces a rule of that name."""
        try:
            release = _named_release(name, document)
        except InputError as exc:
            raise ManifestFormatError(exc.field, exc.problem) from exc
        return attrs.evolve(self, secrets={**self.secrets, name: release})


def _parse_entry(value: object, path: str) -> Accepted:
    mapping = expect_mapping(value, path)
    if "mr_td" in mapping:
        expect_keys(mapping, path, TD_FIELDS, PIN_FIELDS)
        fields = {
            name: expect_hex(mapping[name], join(path, name), _TD_SIZES.get(name, 48))
            for name in TD_FIELDS
        }
        return AcceptedTdIdentity(**fields, pins=_parse_pins(mapping, path))
    expect_keys(mapping, path, _SGX_REQUIRED, _SGX_OPTIONAL)
    return AcceptedIdentity(
        mr_enclave=expect_hex(mapping["mr_enclave"], join(path, "mr_enclave"), 32),
        mr_signer=expect_hex(mapping["mr_signer"], join(path, "mr_signer"), 32),
        isv_prod_id=expect_int(mapping["isv_prod_id"], join(path, "isv_prod_id"), 0, _U16),
        min_isv_svn=expect_int(mapping["min_isv_svn"], join(path, "min_isv_svn"), 0, _U16),
        debug=expect_bool(mapping.get("debug", False), join(path, "debug")),
        pins=_parse_pins(mapping, path),
    )


_SGX_REQUIRED = ("mr_enclave", "mr_signer", "isv_prod_id", "min_isv_svn")
_SGX_OPTIONAL = ("debug", *PIN_FIELDS)
_TD_SIZES = {"td_attributes": 8, "xfam": 8}
_U16 = 0xFFFF
_MAX_VERSION = (1 << 63) - 1
# 1,000 services take about 230 kB; the limit leaves room for tens of thousands.
MAX_MANIFEST_BYTES = 16 << 20


def parse_manifest(data: bytes, what: str = "manifest") -> Manifest:
    """The manifest in ``data``, through the strict YAML reader: the one parser of the bytes
    auditors sign, so what they reviewed and what a service enforces cannot differ."""
    try:
        mapping = load_yaml_mapping(decode_document(data, what, MAX_MANIFEST_BYTES), what)
        expect_keys(mapping, "", ["version", "expires", "enclaves"], ["issued", "secrets"])
        enclaves: dict[str, tuple[Accepted, ...]] = {}
        for name, entries in expect_mapping(mapping["enclaves"], "enclaves").items():
            where = join("enclaves", name)
            if not SERVICE_NAME.fullmatch(name):
                raise InputError(where, f"invalid service name (expected {SERVICE_NAME.pattern})")
            refuse_owners_edge(name, where)
            items = expect_list(entries, where)
            if not items:
                raise InputError(where, "expected at least one accepted identity")
            enclaves[name] = tuple(
                _parse_entry(item, join(where, i)) for i, item in enumerate(items)
            )
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
            secrets=_parse_secrets(mapping.get("secrets", {})),
        )
    except ManifestFormatError:
        raise
    except InputError as exc:
        raise ManifestFormatError(exc.field, exc.problem) from exc


def _parse_secrets(value: object) -> dict[str, SecretRelease]:
    return {
        name: _named_release(name, item) for name, item in expect_mapping(value, "secrets").items()
    }


def _named_release(name: str, item: object) -> SecretRelease:
    where = join("secrets", name)
    if not SECRET_NAME.fullmatch(name):
        raise InputError(where, f"invalid secret name (expected {SECRET_NAME.pattern})")
    return _parse_release(expect_mapping(item, where), where)


def _parse_release(item: Mapping[str, object], where: str) -> SecretRelease:
    expect_keys(item, where, ["allow"], ["min_config_svn", "relax"])
    allow = tuple(
        service_name(service, join(join(where, "allow"), i))
        for i, service in enumerate(expect_list(item["allow"], join(where, "allow")))
    )
    if not allow:
        raise InputError(
            join(where, "allow"), "names no service: the secret could never be released"
        )
    if len(set(allow)) != len(allow):
        raise_duplicate(allow, join(where, "allow"))
    relaxed = {}
    for check, reason in expect_mapping(item.get("relax", {}), join(where, "relax")).items():
        field = join(join(where, "relax"), check)
        if check not in RELEASE_CHECKS:
            raise InputError(field, f"unknown check (known: {', '.join(RELEASE_CHECKS)})")
        text = expect_str(reason, field).strip()
        if not text:
            raise InputError(field, "turning a check off needs a reason")
        relaxed[check] = text
    return SecretRelease(
        allow=allow,
        min_config_svn=expect_int(
            item.get("min_config_svn", 0), join(where, "min_config_svn"), 0, _U16
        ),
        relaxed=relaxed,
    )
