"""DCAP collateral in dcap-qvl's QuoteCollateralV3 JSON layout, and typed views of it.

``tcb_info`` and ``qe_identity`` are kept as the exact text Intel signed: signatures are
checked over those bytes, and the parsed views are only used after that. TCB Info comes in
two JSON versions in the wild, v2 (``sgxtcbcomp01svn``..``16``) and v3
(``sgxtcbcomponents[]``, ``tdxtcbcomponents[]``, ``id``); both are accepted.

The structure rules are Intel's QVL's (AttestationParsers/src/Json/TcbInfo.cpp, TcbLevel.cpp,
TdxModuleIdentity.cpp and AttestationLibrary/src/Verifiers/EnclaveIdentityV2.cpp): TCB levels
are kept sorted as Intel's ``std::set<TcbLevel, std::greater>`` orders them, and a level listed
twice is refused; statuses are checked against the set each structure may carry.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import json
import operator
from typing import Any

import attrs
from cryptography import x509

from teaclave_ma.attestation.errors import CollateralError
from teaclave_ma.attestation.x509_load import load_der_crl, load_pem_chain

FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


# What a TCB info level may say (TcbLevel.cpp, parseTcbLevelCommon).
TCB_LEVEL_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
# What a QE identity level may say (EnclaveIdentityV2.cpp via parseStringToTcbStatus); any
# other status makes Intel refuse the whole identity.
QE_LEVEL_STATUSES = frozenset(
    {"UpToDate", "ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked"}
)
# What a TDX module identity level may say (TcbStatus.h, VALID_MODULE_TCB_STATUSES).
TDX_MODULE_LEVEL_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})


@attrs.frozen
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: dt.datetime


@attrs.frozen
class IsvLevel:
    """A level of a QE identity or a TDX module identity."""

    isvsvn: int
    status: str
    advisory_ids: tuple[str, ...]
    tcb_date: dt.datetime


@attrs.frozen
class TdxModule:
    """What a TDX module's MRSIGNERSEAM and SEAMATTRIBUTES must be."""

    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes


@attrs.frozen
class TdxModuleIdentity:
    id: str  # upper-cased, as Intel compares it ("TDX_03")
    module: TdxModule
    levels: tuple[IsvLevel, ...]  # by isvsvn, highest first


@attrs.frozen
class TcbInfo:
    id: str  # "SGX" or "TDX" ("SGX" for v2, which has no id)
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]  # in Intel's order: highest first
    tdx_module: TdxModule | None  # TDX TCB info only
    tdx_module_identities: tuple[TdxModuleIdentity, ...]


@attrs.frozen
class QeIdentity:
    id: str
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[IsvLevel, ...]  # in JSON order, as Intel matches them


@attrs.frozen
class Collateral:
    pck_crl_issuer_chain: tuple[x509.Certificate, ...]
    root_ca_crl: x509.CertificateRevocationList
    pck_crl: x509.CertificateRevocationList
    tcb_info_issuer_chain: tuple[x509.Certificate, ...]
    tcb_info_raw: bytes
    tcb_info_signature: bytes
    qe_identity_issuer_chain: tuple[x509.Certificate, ...]
    qe_identity_raw: bytes
    qe_identity_signature: bytes
    tcb_info: TcbInfo
    qe_identity: QeIdentity
    # SHA-256 of the JSON text this was parsed from: what verified collateral is keyed by.
    sha256: bytes = attrs.field(repr=False)
    # The CRLs' DER, which keys their remembered signature checks (re-encoding costs more).
    root_ca_crl_der: bytes = attrs.field(repr=False)
    pck_crl_der: bytes = attrs.field(repr=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> Collateral:
        """Parse collateral; the same bytes give the same (immutable) result, parsed once.
        Only parsing is remembered: signatures and validity are checked on every use."""
        return _parse_collateral(data.encode() if isinstance(data, str) else bytes(data))

    @classmethod
    def _parse(cls, data: bytes) -> Collateral:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CollateralError("collateral", f"not valid JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise CollateralError("collateral", "expected a JSON object")
        missing = [name for name in FIELDS if not isinstance(document.get(name), str)]
        if missing:
            raise CollateralError(missing[0], "missing, or not a string")
        # In the order of the fields, so that the first defect is the one reported.
        pck_crl_issuer_chain = _chain(document["pck_crl_issuer_chain"], "pck_crl_issuer_chain")
        root_ca_crl_der = _unhex(document["root_ca_crl"], "root_ca_crl")
        root_ca_crl = load_der_crl(root_ca_crl_der, "root_ca_crl", CollateralError)
        pck_crl_der = _unhex(document["pck_crl"], "pck_crl")
        pck_crl = load_der_crl(pck_crl_der, "pck_crl", CollateralError)
        tcb_info_chain = _chain(document["tcb_info_issuer_chain"], "tcb_info_issuer_chain")
        tcb_info_signature = _signature(document["tcb_info_signature"], "tcb_info_signature")
        # Both are normally the TCB signing chain: one object, so that it is checked once.
        qe_identity_chain = (
            tcb_info_chain
            if document["qe_identity_issuer_chain"] == document["tcb_info_issuer_chain"]
            else _chain(document["qe_identity_issuer_chain"], "qe_identity_issuer_chain")
        )
        tcb_info_raw = document["tcb_info"].encode()
        qe_identity_raw = document["qe_identity"].encode()
        return cls(
            pck_crl_issuer_chain=pck_crl_issuer_chain,
            root_ca_crl=root_ca_crl,
            pck_crl=pck_crl,
            tcb_info_issuer_chain=tcb_info_chain,
            tcb_info_raw=tcb_info_raw,
            tcb_info_signature=tcb_info_signature,
            qe_identity_issuer_chain=qe_identity_chain,
            qe_identity_raw=qe_identity_raw,
            qe_identity_signature=_signature(
                document["qe_identity_signature"], "qe_identity_signature"
            ),
            tcb_info=_typed_tcb_info(tcb_info_raw),
            qe_identity=_typed_qe_identity(qe_identity_raw),
            sha256=hashlib.sha256(data).digest(),
            root_ca_crl_der=root_ca_crl_der,
            pck_crl_der=pck_crl_der,
        )


@functools.lru_cache(maxsize=64)
def _parse_collateral(data: bytes) -> Collateral:
    return Collateral._parse(data)


def _chain(pem: str, field: str) -> tuple[x509.Certificate, ...]:
    return tuple(load_pem_chain(pem.encode(), field, CollateralError))


def _unhex(hex_text: str, field: str) -> bytes:
    try:
        return bytes.fromhex(hex_text)
    except ValueError as exc:
        raise CollateralError(field, "not hex") from exc


def _signature(hex_text: str, field: str) -> bytes:
    raw = _unhex(hex_text, field)
    if len(raw) != 64:
        raise CollateralError(field, f"expected a 64-byte raw r||s signature, got {len(raw)} bytes")
    return raw


class _Fields:
    """Typed access to one JSON object, naming the path of anything wrong."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise CollateralError(path, "expected a JSON object")
        self.value: dict[str, Any] = value
        self.path = path

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        item = self.value.get(key)
        if not isinstance(item, kind) or (isinstance(item, bool) and kind is int):
            raise CollateralError(
                f"{self.path}.{key}", f"missing or of the wrong type ({type(item).__name__})"
            )
        return item

    def has(self, key: str) -> bool:
        return key in self.value

    def time(self, key: str) -> dt.datetime:
        text = self.get(key, str)
        moment = _utc_time(text)
        if moment is None:
            raise CollateralError(
                f"{self.path}.{key}", f"not an ISO 8601 time with a UTC offset: {text!r}"
            )
        return moment

    def status(self, allowed: frozenset[str]) -> str:
        status: str = self.get("tcbStatus", str)
        if status not in allowed:
            raise CollateralError(
                f"{self.path}.tcbStatus",
                f"{status!r} is not a status this structure may carry "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
        return status

    def hex(self, key: str, size: int) -> bytes:
        text = self.get(key, str)
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise CollateralError(f"{self.path}.{key}", f"not hex: {text!r}") from exc
        if len(raw) != size:
            raise CollateralError(f"{self.path}.{key}", f"expected {size} bytes, got {len(raw)}")
        return raw

    def advisories(self) -> tuple[str, ...]:
        items = self.value.get("advisoryIDs", [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise CollateralError(f"{self.path}.advisoryIDs", "expected a list of strings")
        return tuple(items)


def _utc_time(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _load(raw: bytes, path: str) -> _Fields:
    try:
        return _Fields(json.loads(raw), path)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CollateralError(path, f"not valid JSON ({exc})") from exc


_SVN = operator.itemgetter("svn")


def _well_formed_svns(items: object) -> tuple[int, ...] | None:
    """16 components as json gives well-formed ones, read directly; None for anything else."""
    if type(items) is not list or len(items) != 16:
        return None
    try:
        svns = tuple(map(_SVN, items))
    except (TypeError, KeyError):
        return None
    # json gives exact dicts and ints; exactly int, as its true and false are bools.
    return svns if set(map(type, svns)) == {int} else None


def _svns(items: object, path: str) -> tuple[int, ...]:
    # Every level has 16 of these: read directly, field by field (for an error naming the
    # path) only when something is wrong.
    svns = _well_formed_svns(items)
    if svns is not None:
        return svns
    if not isinstance(items, list) or len(items) != 16:
        raise CollateralError(path, "expected a list of 16 components")
    return tuple(_Fields(item, f"{path}[{i}]").get("svn", int) for i, item in enumerate(items))


def _well_formed_v3_level(value: object) -> TcbLevel | None:
    """A v3 TCB level as json gives a well-formed one, read without building a path for
    every field; None for anything else, which ``_tcb_level`` then reads field by field
    (accepting exactly what this accepts, and naming what is wrong otherwise)."""
    if type(value) is not dict:
        return None
    tcb = value.get("tcb")
    if type(tcb) is not dict:
        return None
    pce_svn, status = tcb.get("pcesvn"), value.get("tcbStatus")
    advisories, date = value.get("advisoryIDs", []), value.get("tcbDate")
    if not (
        type(pce_svn) is int
        and type(status) is str
        and status in TCB_LEVEL_STATUSES
        and type(advisories) is list
        and all(type(item) is str for item in advisories)
        and type(date) is str
    ):
        return None
    tcb_date = _utc_time(date)
    sgx = _well_formed_svns(tcb.get("sgxtcbcomponents"))
    has_tdx = "tdxtcbcomponents" in tcb  # present, it must be well-formed (null is not)
    tdx = _well_formed_svns(tcb["tdxtcbcomponents"]) if has_tdx else None
    if sgx is None or (has_tdx and tdx is None) or tcb_date is None:
        return None
    return TcbLevel(sgx, pce_svn, tdx, status, tuple(advisories), tcb_date)


def _tcb_level(value: object, path: str, version: int) -> TcbLevel:
    if version >= 3:
        level_read = _well_formed_v3_level(value)
        if level_read is not None:
            return level_read
    level = _Fields(value, path)
    tcb = _Fields(level.get("tcb", dict), f"{path}.tcb")
    tdx: tuple[int, ...] | None = None
    if version >= 3:
        sgx = _svns(tcb.get("sgxtcbcomponents", list), f"{path}.tcb.sgxtcbcomponents")
        if tcb.has("tdxtcbcomponents"):
            tdx = _svns(tcb.get("tdxtcbcomponents", list), f"{path}.tcb.tdxtcbcomponents")
    else:
        sgx = tuple(tcb.get(f"sgxtcbcomp{i:02d}svn", int) for i in range(1, 17))
    return TcbLevel(
        sgx,
        tcb.get("pcesvn", int),
        tdx,
        level.status(TCB_LEVEL_STATUSES),
        level.advisories(),
        level.time("tcbDate"),
    )


def _isv_levels(items: object, path: str, statuses: frozenset[str]) -> tuple[IsvLevel, ...]:
    if not isinstance(items, list) or not items:
        raise CollateralError(path, "expected a non-empty list")
    levels = []
    for i, item in enumerate(items):
        level = _Fields(item, f"{path}[{i}]")
        isvsvn = _Fields(level.get("tcb", dict), f"{path}[{i}].tcb").get("isvsvn", int)
        levels.append(
            IsvLevel(isvsvn, level.status(statuses), level.advisories(), level.time("tcbDate"))
        )
    return tuple(levels)


def _tdx_module(module: _Fields) -> TdxModule:
    return TdxModule(
        mrsigner=module.hex("mrsigner", 48),
        attributes=module.hex("attributes", 8),
        attributes_mask=module.hex("attributesMask", 8),
    )


def _tdx_module_identity(module: _Fields) -> TdxModuleIdentity:
    path = f"{module.path}.tcbLevels"
    levels = _isv_levels(module.get("tcbLevels", list), path, TDX_MODULE_LEVEL_STATUSES)
    # TdxModuleIdentity.cpp: a set ordered by isvsvn, highest first; one isvsvn twice is refused.
    ordered = sorted(levels, key=lambda level: level.isvsvn, reverse=True)
    for higher, lower in itertools.pairwise(ordered):
        if higher.isvsvn == lower.isvsvn:
            raise CollateralError(path, f"isvsvn {higher.isvsvn} is listed twice")
    return TdxModuleIdentity(module.get("id", str).upper(), _tdx_module(module), tuple(ordered))


def _in_intel_order(levels: list[TcbLevel], tdx: bool) -> tuple[TcbLevel, ...]:
    """The levels as Intel's QVL walks them: by SGX components, then PCESVN, then (TDX TCB
    info only) TDX components, highest first (TcbLevel::operator>). Levels equal on that key
    are one level listed twice, which Intel refuses; so do we, naming both."""

    def key(item: tuple[int, TcbLevel]) -> tuple[object, ...]:
        level = item[1]
        return (level.sgx_components, level.pce_svn, level.tdx_components if tdx else ())

    ordered = sorted(enumerate(levels), key=key, reverse=True)
    for higher, lower in itertools.pairwise(ordered):
        if key(higher) == key(lower):
            first, second = sorted((higher[0], lower[0]))
            raise CollateralError(
                f"tcb_info.tcbLevels[{second}]",
                f"the same TCB as tcbLevels[{first}] "
                f"({higher[1].status} and {lower[1].status}): a level listed twice",
            )
    return tuple(level for _, level in ordered)


def parse_tcb_info(raw: bytes) -> TcbInfo:
    info = _load(raw, "tcb_info")
    version = info.get("version", int)
    if version not in (2, 3):
        raise CollateralError(
            "tcb_info.version", f"unsupported TCB info version {version} (supported: 2, 3)"
        )
    identifier = info.get("id", str) if version >= 3 else "SGX"
    if identifier not in ("SGX", "TDX"):
        raise CollateralError("tcb_info.id", f"expected 'SGX' or 'TDX', got {identifier!r}")
    tdx = identifier == "TDX"
    # TcbInfo.cpp parsePartV3: the TDX module sections belong to TDX TCB info, and only there.
    tdx_module = None
    modules: list[TdxModuleIdentity] = []
    if not tdx:
        for name in ("tdxModule", "tdxModuleIdentities"):
            if info.has(name):
                raise CollateralError(f"tcb_info.{name}", "not allowed in SGX TCB info")
    else:
        tdx_module = _tdx_module(_Fields(info.get("tdxModule", dict), "tcb_info.tdxModule"))
        if info.has("tdxModuleIdentities"):
            items = info.get("tdxModuleIdentities", list)
            if not items:
                raise CollateralError("tcb_info.tdxModuleIdentities", "present but empty")
            modules = [
                _tdx_module_identity(_Fields(item, f"tcb_info.tdxModuleIdentities[{i}]"))
                for i, item in enumerate(items)
            ]
    items = info.get("tcbLevels", list)
    if not items:
        raise CollateralError("tcb_info.tcbLevels", "expected at least one TCB level")
    levels = [
        _tcb_level(level, f"tcb_info.tcbLevels[{i}]", version) for i, level in enumerate(items)
    ]
    if tdx:
        for i, level in enumerate(levels):
            if level.tdx_components is None:
                raise CollateralError(
                    f"tcb_info.tcbLevels[{i}].tcb.tdxtcbcomponents", "required in TDX TCB info"
                )
    tcb_type = info.get("tcbType", int)
    if tcb_type != 0:
        raise CollateralError("tcb_info.tcbType", f"unsupported TCB type {tcb_type} (supported: 0)")
    return TcbInfo(
        id=identifier,
        version=version,
        issue_date=info.time("issueDate"),
        next_update=info.time("nextUpdate"),
        fmspc=info.hex("fmspc", 6),
        pce_id=info.hex("pceId", 2),
        tcb_evaluation_data_number=_evaluation_data_number(info),
        levels=_in_intel_order(levels, tdx),
        tdx_module=tdx_module,
        tdx_module_identities=tuple(modules),
    )


def _evaluation_data_number(document: _Fields) -> int:
    number: int = document.get("tcbEvaluationDataNumber", int)
    if number < 0:
        raise CollateralError(f"{document.path}.tcbEvaluationDataNumber", f"negative: {number}")
    return number


def parse_qe_identity(raw: bytes) -> QeIdentity:
    identity = _load(raw, "qe_identity")
    version = identity.get("version", int)
    if version != 2:
        raise CollateralError(
            "qe_identity.version", f"unsupported QE identity version {version} (supported: 2)"
        )
    return QeIdentity(
        id=identity.get("id", str),
        version=version,
        issue_date=identity.time("issueDate"),
        next_update=identity.time("nextUpdate"),
        tcb_evaluation_data_number=_evaluation_data_number(identity),
        # The hex text is the bytes of the report's little-endian MISCSELECT field, as Intel
        # reads it (EnclaveReportVerifier::vectorToUint32 swaps the bytes) and dcap-qvl too.
        miscselect=int.from_bytes(identity.hex("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(identity.hex("miscselectMask", 4), "little"),
        attributes=identity.hex("attributes", 16),
        attributes_mask=identity.hex("attributesMask", 16),
        mrsigner=identity.hex("mrsigner", 32),
        isvprodid=identity.get("isvprodid", int),
        levels=_isv_levels(
            identity.get("tcbLevels", list), "qe_identity.tcbLevels", QE_LEVEL_STATUSES
        ),
    )


# Typed views by the exact JSON text: collateral is re-fetched whenever one piece changes
# (CRLs daily, TCB info and QE identity far less often), so a new collateral set usually
# carries a TCB info text seen before. Only parsing is remembered (immutable values; a
# failure raises and is not kept); the signature over the text is checked on every use.
@functools.lru_cache(maxsize=64)
def _typed_tcb_info(raw: bytes) -> TcbInfo:
    return parse_tcb_info(raw)


@functools.lru_cache(maxsize=64)
def _typed_qe_identity(raw: bytes) -> QeIdentity:
    return parse_qe_identity(raw)


def clear_cache() -> None:
    _parse_collateral.cache_clear()
    _typed_tcb_info.cache_clear()
    _typed_qe_identity.cache_clear()
