"""What every parser property test shares: the property itself, and structure-aware input
strategies (mutations of valid samples, DER trees re-encoded around a changed node, JSON
and YAML trees with a changed value), so that inputs get past the first length check."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.formats import der
from tests.helpers import Tlv, read_all, traced_peak_memory

# An input that keeps a parser busy for seconds (a super-linear path) fails its example; the
# limit is far above what any parser needs (milliseconds), so a loaded CI machine is safe.
HANG_LIMIT = dt.timedelta(seconds=2)
FUZZ = settings(
    max_examples=200,
    deadline=HANG_LIMIT,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Binary parsers may copy their input a few times over, never allocate what a length field
# claims: peak traced memory stays within this many times the input, plus a fixed allowance.
MEMORY_PER_INPUT_BYTE = 16
MEMORY_ALLOWANCE = 256 * 1024

INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF)


def parses_or_refuses(parser: Callable[[Any], object], data: Any) -> None:
    """The property: a value, or the library's own error. Anything else propagates."""
    with contextlib.suppress(TeaclaveMAError):
        parser(data)


def parses_or_refuses_bounded(parser: Callable[[bytes], object], data: bytes) -> None:
    """``parses_or_refuses`` with peak memory bounded by the input's size."""
    with traced_peak_memory() as peak:
        parses_or_refuses(parser, data)
    limit = MEMORY_PER_INPUT_BYTE * len(data) + MEMORY_ALLOWANCE
    assert peak.bytes <= limit, (
        f"{len(data)}-byte input made the parser allocate {peak.bytes} bytes"
    )


def _put(data: bytearray, position: int, value: bytes) -> None:
    data[position : position + len(value)] = value


@st.composite
def mutated(draw: st.DrawFn, sample: bytes, fields: Sequence[tuple[int, int]] = ()) -> bytes:
    """``sample`` after one to three byte-level mutations. ``fields`` are (offset, width)
    of its little-endian integer fields (lengths, types), which may get boundary values."""
    data = bytearray(sample)
    kinds = ["replace", "flip", "truncate", "delete", "insert", "duplicate", "integer"]
    if fields:
        kinds.append("field")
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        span = draw(st.integers(1, 64))
        if kind == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[position:]
        elif kind == "delete":
            del data[position : position + span]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "duplicate":
            data[position:position] = data[position : position + span]
        elif kind == "integer":
            width = draw(st.sampled_from([1, 2, 4]))
            _put(data, position, _boundary_value(draw, width, len(data)))
        elif kind == "field":
            offset, width = draw(st.sampled_from(fields))
            _put(data, offset, _boundary_value(draw, width, len(data)))
    return bytes(data)


def _boundary_value(draw: st.DrawFn, width: int, size: int) -> bytes:
    top = (1 << (8 * width)) - 1
    candidates = [v & top for v in (*INTERESTING_INTS, size, size - 1, size + 1)] + [top]
    value = draw(st.sampled_from(candidates) | st.integers(0, top))
    return value.to_bytes(width, "little")


def mutated_samples(samples: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    return st.sampled_from(list(samples)).flatmap(mutated)


# -- DER -------------------------------------------------------------------------------------


def der_nodes(data: bytes) -> list[Tlv]:
    """Every TLV of ``data`` in pre-order, descending into constructed ones."""
    nodes = []
    for item in read_all(data):
        nodes.append(item)
        if item.tag & 0x20:  # constructed: its value is more TLVs
            nodes += der_nodes(item.value)
    return nodes


def der_replace(data: bytes, index: int, replace: Callable[[Tlv], bytes]) -> bytes:
    """``data`` with the ``index``-th TLV (pre-order) replaced by ``replace(tlv)``; every
    enclosing length is re-encoded, so the change is seen by the layer that reads it."""
    counter = [index]

    def walk(buffer: bytes) -> bytes:
        out = []
        for item in read_all(buffer):
            counter[0] -= 1
            if counter[0] == -1:
                out.append(replace(item))
            elif item.tag & 0x20 and counter[0] >= 0:
                out.append(der.encode_tlv(item.tag, walk(item.value)))
            else:
                out.append(item.encoded())
        return b"".join(out)

    return walk(data)


@st.composite
def der_mutated(draw: st.DrawFn, sample: bytes) -> bytes:
    """``sample`` (valid DER) with one node's tag, value or whole encoding changed."""
    index = draw(st.integers(0, len(der_nodes(sample)) - 1))
    kind = draw(st.sampled_from(["value", "long", "tag", "mutate", "drop", "repeat", "random"]))
    value = draw(st.binary(max_size=40))
    # Long runs: integers and OID arcs of thousands of digits, lengths of several bytes.
    run = bytes([draw(st.sampled_from([0x7F, 0x80, 0xFF]))]) * draw(st.integers(128, 4096))
    tag = draw(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x30, 0x31, 0xA0]))
    noise = draw(st.randoms(use_true_random=False))

    def replace(item: Tlv) -> bytes:
        if kind == "value":
            return der.encode_tlv(item.tag, value)
        if kind == "long":
            return der.encode_tlv(item.tag, run + b"\x01")
        if kind == "tag":
            return der.encode_tlv(tag, item.value)
        if kind == "mutate" and item.value:
            changed = bytearray(item.value)
            changed[noise.randrange(len(changed))] = noise.randrange(256)
            return der.encode_tlv(item.tag, bytes(changed))
        if kind == "drop":
            return b""
        if kind == "repeat":
            return item.encoded() * 2
        return value

    return der_replace(sample, index, replace)


# -- JSON and YAML trees ---------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "00", "ff" * 16, "2025-07-01T00:00:00Z", "UpToDate", "SGX", "TDX"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def tree_mutated(draw: st.DrawFn, document: Any) -> Any:
    """A deep copy of a JSON-like ``document`` with one node replaced, removed, or given
    an extra key or item; the rest stays valid, so the parser's later checks are reached."""
    paths = _paths(document)
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["replace", "remove", "add"]))
    new = draw(VALUES)
    copy = deepcopy(document)
    if not path:
        return new if kind == "replace" else copy
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "replace":
        parent[last] = new
    elif kind == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = new
    else:
        parent.insert(last, new)
    return copy
