"""The Intel SGX extension (OID 1.2.840.113741.1.13.1) of a PCK certificate.

It tells which platform the PCK key belongs to (FMSPC, PCE id) and the TCB it was issued
for (16 SGX component SVNs, PCE SVN, CPU SVN): the inputs of TCB level matching.
"""

from __future__ import annotations

import attrs
from cryptography import x509

from teaclave_ma.attestation.errors import PckExtensionError
from teaclave_ma.formats import der
from teaclave_ma.formats.der import DerError, Span

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCE_ID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
_TCB_COMPONENTS = tuple(f"{_TCB}.{i}" for i in range(1, 17))
_PCE_SVN = _TCB + ".17"
_CPU_SVN = _TCB + ".18"
_MAX_INTEGER_BYTES = 3  # every integer field is 0..0xFFFF: at most 00 FF FF in DER

# The OIDs this parser reads, by their DER contents: known ones are found by a dictionary
# lookup instead of being decoded (any other OID is still decoded, which validates it).
_KNOWN_OIDS = {
    der.encode_oid(oid)[2:]: oid
    for oid in (
        _PPID, _TCB, _PCE_ID, _FMSPC, _SGX_TYPE, _PLATFORM_INSTANCE_ID, *_TCB_COMPONENTS,
        _PCE_SVN, _CPU_SVN,
    )
}  # fmt: skip


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


def _pairs(data: bytes, start: int, end: int, where: str) -> dict[str, Span]:
    """SEQUENCE OF SEQUENCE { OID, value } in ``data[start:end]`` as a dict by dotted OID;
    duplicate OIDs are an error."""
    result: dict[str, Span] = {}
    for tag, offset, value_start, value_end in der.spans(data, start, end, where):
        der.check_tag(tag, der.TAG_SEQUENCE, offset, where)
        children = der.spans(data, value_start, value_end, where)
        if len(children) != 2:
            raise PckExtensionError(
                where, f"expected (OID, value) at offset {offset}, got {len(children)} elements"
            )
        (oid_tag, oid_offset, oid_start, oid_end), value = children
        der.check_tag(oid_tag, der.TAG_OID, oid_offset, where)
        encoded = data[oid_start:oid_end]
        oid = _KNOWN_OIDS.get(encoded) or der.decode_oid(encoded, where)
        if oid in result:
            raise PckExtensionError(oid, "appears twice")
        result[oid] = value
    return result


def _octets(data: bytes, fields: dict[str, Span], oid: str, size: int) -> bytes:
    item = fields.get(oid)
    if item is None:
        raise PckExtensionError(oid, "required field is missing")
    tag, offset, start, end = item
    der.check_tag(tag, der.TAG_OCTET_STRING, offset, oid)
    if end - start != size:
        raise PckExtensionError(oid, f"expected {size} bytes, got {end - start}")
    return data[start:end]


def _integer(data: bytes, fields: dict[str, Span], oid: str, tag: int = der.TAG_INTEGER) -> int:
    item = fields.get(oid)
    if item is None:
        raise PckExtensionError(oid, "required field is missing")
    found, offset, start, end = item
    der.check_tag(found, tag, offset, oid)
    # Checked before decoding: printing a huge INTEGER in the message would itself fail.
    if end - start > _MAX_INTEGER_BYTES:
        raise PckExtensionError(oid, f"{end - start}-byte integer out of range")
    value = der.decode_int(data[start:end], oid)
    if not 0 <= value <= 0xFFFF:
        raise PckExtensionError(oid, f"value {value} out of range")
    return value


def parse_pck_extension_value(value: bytes) -> PckExtension:
    value = bytes(value)  # slices of it are looked up in a dict: no bytearray or memoryview
    try:
        tag, offset, start, end = der.single_span(value, "sgx_extension")
        der.check_tag(tag, der.TAG_SEQUENCE, offset, "sgx_extension")
        fields = _pairs(value, start, end, "sgx_extension")
        tcb_item = fields.get(_TCB)
        if tcb_item is None:
            raise PckExtensionError(_TCB, "required field is missing")
        tag, offset, start, end = tcb_item
        der.check_tag(tag, der.TAG_SEQUENCE, offset, _TCB)
        tcb = _pairs(value, start, end, _TCB)
        return PckExtension(
            ppid=_octets(value, fields, _PPID, 16),
            tcb_components=tuple(_integer(value, tcb, oid) for oid in _TCB_COMPONENTS),
            pce_svn=_integer(value, tcb, _PCE_SVN),
            cpu_svn=_octets(value, tcb, _CPU_SVN, 16),
            pce_id=_octets(value, fields, _PCE_ID, 2),
            fmspc=_octets(value, fields, _FMSPC, 6),
            sgx_type=_integer(value, fields, _SGX_TYPE, der.TAG_ENUMERATED),
            platform_instance_id=None
            if _PLATFORM_INSTANCE_ID not in fields
            else _octets(value, fields, _PLATFORM_INSTANCE_ID, 16),
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
