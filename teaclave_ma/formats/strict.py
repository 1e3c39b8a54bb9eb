"""Strict reading of YAML documents into typed values.

Every accessor names the dotted path of the value it rejects, so a user reads
``enclaves.storage[1].mr_enclave: expected 64 hex characters, got 63`` and not a
traceback. PyYAML's safe loader is tightened further: duplicate keys are an error
(a later key would silently win, which is how a signed document can say two things).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from teaclave_ma.errors import InputError

_HEX = re.compile(r"[0-9a-fA-F]*")


# libyaml's parser when PyYAML was built with it (several times faster on large
# manifests); the same safe constructors either way.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping_no_duplicates(
    loader: _StrictLoader, node: yaml.MappingNode
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(
                "", f"mapping keys must be plain values (line {key_node.start_mark.line + 1})"
            )
        key = loader.construct_object(key_node)
        if key in seen:
            raise InputError(str(key), f"duplicate key at line {key_node.start_mark.line + 1}")
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def read_bounded(path: Path, limit: int) -> bytes:
    """A file's bytes, refused once it is larger than ``limit``: a huge file is refused by
    its size before any read, an endless one (a device, a pipe) after ``limit + 1`` bytes."""
    with Path(path).open("rb") as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise _too_large(str(path), limit)
        # In chunks: read(limit + 1) would allocate the whole limit for every small file.
        chunks: list[bytes] = []
        total = 0
        while chunk := handle.read(min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(str(path), limit)
    return b"".join(chunks)


_CHUNK = 1 << 16


def _too_large(what: str, limit: int) -> InputError:
    return InputError(what, f"larger than the limit of {limit} bytes; refused unparsed")


def decode_document(data: bytes, what: str, limit: int | None) -> str:
    """The text of a document of at most ``limit`` bytes (None: the caller bounded it) of UTF-8."""
    if limit is not None and len(data) > limit:
        raise _too_large(what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(what, f"not UTF-8 (byte {exc.start})") from exc


def parse_yaml_mapping(data: bytes, what: str, limit: int | None = None) -> dict[str, Any]:
    """Decode UTF-8 and parse one YAML mapping; ``what`` names the document in errors."""
    return load_yaml_mapping(decode_document(data, what, limit), what)


def load_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except InputError as exc:
        raise InputError(exc.field, f"{exc.problem} in {what}") from exc
    except yaml.YAMLError as exc:
        raise InputError(what, f"not valid YAML: {exc}") from exc
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # Explicit tags and impossible dates reach PyYAML's own constructors, which then
        # raise whatever their conversion raises: `version: !!int x` (ValueError),
        # `expires: 2027-02-30T00:00:00Z` (ValueError), `ok: !!bool maybe` (KeyError),
        # `at: !!timestamp x` (AttributeError).
        raise InputError(
            what, f"not valid YAML: a value cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    return expect_mapping(document, what)


def plain_scalar_is_str(text: str) -> bool:
    """Whether YAML reads ``text``, written unquoted, as a string (and not as a number,
    boolean, null or timestamp): PyYAML's own implicit resolvers decide."""
    resolvers = _IMPLICIT_RESOLVERS.get(text[:1])
    return resolvers is None or not any(regexp.match(text) for _tag, regexp in resolvers)


_IMPLICIT_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = (
    _StrictLoader.yaml_implicit_resolvers
)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def expect_mapping(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(path, f"expected a mapping, got {type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise InputError(path, f"keys must be strings, got {key!r}")
    return value


def expect_keys(
    mapping: Mapping[str, Any], path: str, required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    required = list(required)
    allowed = set(required) | set(optional)
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise InputError(
            join(path, unknown[0]), f"unknown field (allowed: {', '.join(sorted(allowed))})"
        )
    for key in required:
        if key not in mapping:
            raise InputError(join(path, key), "missing required field")


def expect_int(value: object, path: str, low: int, high: int) -> int:
    # bool is an int subclass in Python; `debug: true` must not pass as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(path, f"expected an integer, got {type_name(value)} {value!r}")
    if not low <= value <= high:
        raise InputError(path, f"expected an integer in {low}..{high}, got {value}")
    return value


def expect_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(path, f"expected true or false, got {type_name(value)} {value!r}")
    return value


def expect_str(value: object, path: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise InputError(path, f"expected a string, got {type_name(value)} {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise InputError(path, f"{value!r} does not match {pattern.pattern}")
    return value


def expect_list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputError(path, f"expected a list, got {type_name(value)}")
    return value


def expect_hex(value: object, path: str, nbytes: int) -> bytes:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise InputError(path, "YAML read this hex value as a number; put it in quotes")
    text = expect_str(value, path)
    if len(text) != 2 * nbytes:
        raise InputError(path, f"expected {2 * nbytes} hex characters, got {len(text)}")
    if not _HEX.fullmatch(text):
        raise InputError(path, f"expected hex characters, got {text!r}")
    return bytes.fromhex(text)


def expect_utc_time(value: object, path: str) -> dt.datetime:
    """A timestamp with an explicit UTC offset; naive times are ambiguous and refused."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError(path, f"expected an ISO 8601 UTC timestamp, got {value!r}") from exc
    else:
        raise InputError(path, f"expected an ISO 8601 UTC timestamp, got {type_name(value)}")
    if moment.tzinfo is None or moment.utcoffset() != dt.timedelta(0):
        raise InputError(path, f"timestamp must be in UTC (end it with Z), got {value!r}")
    return moment.astimezone(dt.UTC)


def format_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _BlockDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PEM blocks read best (and diff cleanly) as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(document: Mapping[str, Any]) -> bytes:
    return yaml.dump(
        dict(document), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    ).encode()
