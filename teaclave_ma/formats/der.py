"""A minimal DER reader and writer for the few ASN.1 structures teaclave-ma handles itself.

pyca/cryptography covers X.509 in general; this exists for what it does not expose:
the Intel SGX PCK certificate extension's inner structure, and certificates that
cryptography refuses to load (Gramine's RA-TLS certificates carry NULL signature
parameters). Only definite lengths are accepted, as DER requires; every read is
bounds-checked and failures raise ``DerError`` naming the offset.
"""

from __future__ import annotations

from teaclave_ma.errors import InputError

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
# 20 base-128 digits hold 140 bits: enough for the largest arcs in use (2.25.<UUID>, 128 bits).
MAX_OID_ARC_BYTES = 20


class DerError(InputError):
    """Malformed DER."""


# A TLV as positions in its buffer, so that readers make no copies and no objects:
# (tag, offset of the tag byte, start of the value, end of the value).
Span = tuple[int, int, int, int]


def _header(data: bytes, pos: int, limit: int, what: str, base: int = 0) -> tuple[int, int, int]:
    """Tag, header length and value length of the TLV at ``pos``, which must end by
    ``limit``; ``base`` is added to offsets shown in errors."""
    if pos + 2 > limit:
        raise DerError(what, f"truncated DER header at offset {base + pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError(what, f"multi-byte tags are not supported (offset {base + pos})")
    first = data[pos + 1]
    header = 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(what, f"indefinite length is not DER (offset {base + pos})")
    else:
        count = first & 0x7F
        if count > 4 or pos + 2 + count > limit:
            raise DerError(what, f"bad length of length {count} at offset {base + pos}")
        length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
        if length < 0x80 or data[pos + 2] == 0:
            raise DerError(what, f"non-minimal length encoding at offset {base + pos}")
        header += count
    if pos + header + length > limit:
        raise DerError(
            what,
            f"length {length} at offset {base + pos} runs past the end ({limit - pos - header} left)",
        )
    return tag, header, length


def tlv_at(data: bytes, pos: int, limit: int, what: str) -> tuple[int, int, int]:
    """Tag, value start and value end of the TLV at ``pos``, which must end by ``limit``:
    for walks that read one element at a time, building no list."""
    tag, header, length = _header(data, pos, limit, what)
    return tag, pos + header, pos + header + length


def spans(data: bytes, start: int, end: int, what: str, base: int = 0) -> list[Span]:
    """The TLVs that exactly fill ``data[start:end]``, as positions in ``data``; ``base`` is
    added to offsets shown in errors."""
    items = []
    pos = start
    while pos < end:
        tag, header, length = _header(data, pos, end, what, base)
        items.append((tag, pos, pos + header, pos + header + length))
        pos += header + length
    return items


def single_span(data: bytes, what: str) -> Span:
    """Exactly one TLV filling all of ``data`` (trailing bytes are an error)."""
    tag, header, length = _header(data, 0, len(data), what)
    if header + length != len(data):
        end = header + length
        raise DerError(what, f"{len(data) - end} trailing bytes after offset {end}")
    return tag, 0, header, header + length


def check_tag(found: int, tag: int, offset: int, what: str) -> None:
    if found != tag:
        raise DerError(what, f"expected tag 0x{tag:02x}, got 0x{found:02x} at offset {offset}")


def decode_oid(value: bytes, what: str) -> str:
    if not value or value[-1] & 0x80:
        raise DerError(what, "truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    current = 0
    arc_start = 0
    for index, byte in enumerate(value):
        if index == arc_start and byte == 0x80:
            raise DerError(what, "non-minimal OBJECT IDENTIFIER arc")
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
            arc_start = index + 1
        elif index + 1 - arc_start >= MAX_OID_ARC_BYTES:
            # Unbounded arcs would make huge integers (and str() refuses past 4300 digits).
            raise DerError(what, f"OBJECT IDENTIFIER arc longer than {MAX_OID_ARC_BYTES} bytes")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def decode_int(value: bytes, what: str) -> int:
    if not value:
        raise DerError(what, "empty INTEGER")
    return int.from_bytes(value, "big", signed=True)


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def encode_oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return encode_tlv(TAG_OID, bytes(body))


def encode_int(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return encode_tlv(TAG_INTEGER, value.to_bytes(length, "big", signed=True))


def encode_sequence(*items: bytes) -> bytes:
    return encode_tlv(TAG_SEQUENCE, b"".join(items))
