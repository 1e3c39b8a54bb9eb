"""The Intel SGX extension (OID 1.2.840.113741.1.13.1) of a PCK certificate.

It tells which platform the PCK key belongs to (FMSPC, PCE id) and the TCB it was issued
for (16 SGX component SVNs, PCE SVN, CPU SVN): the inputs of TCB level matching.
"""

from __future__ import annotations

import attrs
from cryptography import x509

from teaclave_ma.attestation.errors import PckExtensionError
from teaclave_ma.formats import der
from teaclave_ma.formats.der import DerError, Tlv

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCE_ID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_PCE_SVN = _TCB + ".17"
_CPU_SVN = _TCB + ".18"
_MAX_INTEGER_BYTES = 3  # every integer field is 0..0xFFFF: at most 00 FF FF in DER


@attrs.frozen
class PckExtension:
    ppid: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None


def _pairs(items: list[Tlv], where: str) -> dict[str, Tlv]:
    """SEQUENCE OF SEQUENCE { OID, value } as a dict; duplicate OIDs are an error."""
    result: dict[str, Tlv] = {}
    for item in items:
        der.expect_tag(item, der.TAG_SEQUENCE, where)
        children = item.children(where)
        if len(children) != 2:
            raise PckExtensionError(
                where,
                f"expected (OID, value) at offset {item.offset}, got {len(children)} elements",
            )
        oid = der.decode_oid(der.expect_tag(children[0], der.TAG_OID, where).value, where)
        if oid in result:
            raise PckExtensionError(oid, "appears twice")
        result[oid] = children[1]
    return result


def _octets(fields: dict[str, Tlv], oid: str, size: int | None) -> bytes:
    item = fields.get(oid)
    if item is None:
        raise PckExtensionError(oid, "required field is missing")
    der.expect_tag(item, der.TAG_OCTET_STRING, oid)
    if size is not None and len(item.value) != size:
        raise PckExtensionError(oid, f"expected {size} bytes, got {len(item.value)}")
    return item.value


def _integer(fields: dict[str, Tlv], oid: str, tag: int = der.TAG_INTEGER) -> int:
    item = fields.get(oid)
    if item is None:
        raise PckExtensionError(oid, "required field is missing")
    der.expect_tag(item, tag, oid)
    # Checked before decoding: printing a huge INTEGER in the message would itself fail.
    if len(item.value) > _MAX_INTEGER_BYTES:
        raise PckExtensionError(oid, f"{len(item.value)}-byte integer out of range")
    value = der.decode_int(item.value, oid)
    if not 0 <= value <= 0xFFFF:
        raise PckExtensionError(oid, f"value {value} out of range")
    return value


def parse_pck_extension_value(value: bytes) -> PckExtension:
    try:
        outer = der.expect_tag(
            der.read_single(value, "sgx_extension"), der.TAG_SEQUENCE, "sgx_extension"
        )
        fields = _pairs(outer.children("sgx_extension"), "sgx_extension")
        tcb_item = fields.get(_TCB)
        if tcb_item is None:
            raise PckExtensionError(_TCB, "required field is missing")
        der.expect_tag(tcb_item, der.TAG_SEQUENCE, _TCB)
        tcb = _pairs(tcb_item.children(_TCB), _TCB)
        platform_instance = fields.get(_PLATFORM_INSTANCE_ID)
        return PckExtension(
            ppid=_octets(fields, _PPID, 16),
            tcb_components=tuple(_integer(tcb, f"{_TCB}.{i}") for i in range(1, 17)),
            pce_svn=_integer(tcb, _PCE_SVN),
            cpu_svn=_octets(tcb, _CPU_SVN, 16),
            pce_id=_octets(fields, _PCE_ID, 2),
            fmspc=_octets(fields, _FMSPC, 6),
            sgx_type=_integer(fields, _SGX_TYPE, der.TAG_ENUMERATED),
            platform_instance_id=None
            if platform_instance is None
            else _octets(fields, _PLATFORM_INSTANCE_ID, 16),
        )
    except DerError as exc:
        raise PckExtensionError(exc.field, exc.problem) from exc


def parse_pck_extension(certificate: x509.Certificate) -> PckExtension:
    try:
        extension = certificate.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(SGX_EXTENSION_OID)
        )
    except x509.ExtensionNotFound:
        raise PckExtensionError(
            SGX_EXTENSION_OID, "the PCK certificate has no Intel SGX extension"
        ) from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise PckExtensionError(SGX_EXTENSION_OID, "unexpected extension type")
    return parse_pck_extension_value(value.value)
