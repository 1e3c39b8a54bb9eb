"""Strict reading of YAML documents into typed values.

Every accessor names the dotted path of the value it rejects, so a user reads
``enclaves.storage[1].mr_enclave: expected 64 hex characters, got 63`` and not a
traceback. The loader is stricter than PyYAML's safe loader in two ways:

- Duplicate keys are an error (a later key would silently win, which is how a signed
  document can say two things), and so are merge keys (``<<``, YAML 1.1 only).
- A plain scalar is read as an integer only when it is a decimal integer in its one
  spelling (``0`` or an optional ``-`` and digits without a leading zero), and as a
  boolean only when it is ``true`` or ``false``. YAML 1.1 reads ``010`` as 8, ``1:0`` as
  60, ``1_000`` as 1000 and ``yes`` as true; YAML 1.2 reads ``010`` as 10 and ``0o17`` as
  15: a person, another tool and the service could each read a hand-edited file
  differently. Such a scalar becomes an ``UnsettledScalar`` that every accessor refuses,
  saying how each YAML version would read it. Quoted scalars are strings, as always.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from teaclave_ma.errors import InputError

_HEX = re.compile(r"[0-9a-fA-F]*")

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL = _TAG + "str", _TAG + "int", _TAG + "bool", _TAG + "null"
_FLOAT, _TIMESTAMP, _MERGE = _TAG + "float", _TAG + "timestamp", _TAG + "merge"
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
# Local tag of the plain scalars that YAML versions read differently (never written in a file).
_UNSETTLED = "tag:teaclave-ma,2026:unsettled"

DECIMAL = re.compile(r"0|-?[1-9][0-9]*")
_BOOLEANS = {"true": True, "false": False}
_NULLS = frozenset(["", "~", "null", "Null", "NULL"])  # the same in YAML 1.1 and 1.2

# YAML 1.1's boolean words that PyYAML does not read as booleans (the 1.1 type list has them).
_YAML11_SHORT_BOOLEANS = {"y": True, "Y": True, "n": False, "N": False}
# YAML 1.2 core schema forms that PyYAML (YAML 1.1) reads as strings.
_YAML12_INT = re.compile(r"[-+]?[0-9]+")
_YAML12_OCTAL = re.compile(r"0o[0-7]+")
_YAML12_HEX = re.compile(r"0x[0-9a-fA-F]+")
_YAML12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_YAML12_SPECIAL_FLOAT = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_YAML12_INTEGERS = (
    (_YAML12_INT, "", 0, 10),
    (_YAML12_OCTAL, "octal ", 2, 8),
    (_YAML12_HEX, "hexadecimal ", 2, 16),
)
_YAML12_BOOLEANS = {"true": True, "True": True, "TRUE": True}
_YAML12_BOOLEANS.update({"false": False, "False": False, "FALSE": False})

# PyYAML's own resolver is the reference for what YAML 1.1 reads.
_YAML11 = yaml.resolver.Resolver()
_YAML11_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@attrs.frozen
class UnsettledScalar:
    """A plain scalar that some YAML version reads as a number or a boolean, but that is not
    in the one spelling all of them read alike. ``readings`` says how each reads it."""

    text: str
    readings: str
    integers: tuple[int, ...]  # what it means as an integer, by the readings that have one
    booleans: tuple[bool, ...]


def _describe_yaml11_int(text: str) -> tuple[str, int | None]:
    digits = text.lstrip("+-").replace("_", "")
    try:
        value = _YAML11_CONSTRUCTOR.construct_yaml_int(yaml.ScalarNode(_INT, text))
    except ValueError:  # `0b_`: matches PyYAML's pattern, yet no number
        return "an integer it cannot compute", None
    for prefix, form in (("0b", "binary"), ("0x", "hexadecimal")):
        if digits.startswith(prefix):
            return f"{form} {value}", value
    if ":" in digits:
        return f"sexagesimal {value}", value
    if digits.startswith("0") and digits != "0":
        return f"octal {value}", value
    return str(value), value


def _yaml11_tag(text: str) -> str:
    """The tag PyYAML (YAML 1.1) gives ``text`` written unquoted."""
    tag: str = _YAML11.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


def _yaml11_reading(text: str) -> tuple[str, int | bool | None] | None:
    tag = _yaml11_tag(text)
    if tag == _INT:
        return _describe_yaml11_int(text)
    if tag == _BOOL:
        value = bool(_YAML11_CONSTRUCTOR.construct_yaml_bool(yaml.ScalarNode(_BOOL, text)))
        return str(value).lower(), value
    if text in _YAML11_SHORT_BOOLEANS:
        value = _YAML11_SHORT_BOOLEANS[text]
        return str(value).lower(), value
    return None


def _yaml12_reading(text: str) -> tuple[str, int | bool | None] | None:
    if text in _YAML12_BOOLEANS:
        value = _YAML12_BOOLEANS[text]
        return str(value).lower(), value
    for pattern, form, start, base in _YAML12_INTEGERS:
        if pattern.fullmatch(text):
            try:
                number = int(text[start:], base)
            except ValueError:  # more digits than Python converts
                return "an integer", None
            return f"{form}{number}", number
    if _YAML12_FLOAT.fullmatch(text) or _YAML12_SPECIAL_FLOAT.fullmatch(text):
        return "a floating-point number", None
    return None


def unsettled(text: str) -> UnsettledScalar | None:
    """``text`` as an ``UnsettledScalar`` if YAML 1.1 or 1.2 reads it, unquoted, as a number
    or boolean although it is not a decimal integer or true/false; None otherwise."""
    if DECIMAL.fullmatch(text) or text in _BOOLEANS:
        return None
    # Each YAML version reads it differently or not at all: check both.
    readings = [
        (version, read(text))
        for version, read in (("1.1", _yaml11_reading), ("1.2", _yaml12_reading))
    ]
    found = [(version, reading) for version, reading in readings if reading is not None]
    if not found:
        return None
    if len(found) == 2 and found[0][1] == found[1][1]:
        words = f"YAML 1.1 and 1.2 would read it as {found[0][1][0]}"
    else:
        words = ", YAML ".join(f"{version} as {reading[0]}" for version, reading in found)
        words = "YAML " + words.replace(" as ", " would read it as ", 1)
    values = [reading[1] for _version, reading in found]
    return UnsettledScalar(
        text,
        words,
        tuple(dict.fromkeys(v for v in values if isinstance(v, int) and not isinstance(v, bool))),
        tuple(dict.fromkeys(v for v in values if isinstance(v, bool))),
    )


def _resolve_plain(text: str) -> str:
    """The tag of a plain scalar: int and bool in their one spelling, the unsettled tag for
    other spellings some YAML version reads as a number or a boolean, and PyYAML's (YAML
    1.1) tag otherwise (strings, nulls, floats, timestamps, merge keys)."""
    if text in _BOOLEANS:
        return _BOOL
    if DECIMAL.fullmatch(text):
        return _INT
    tag = _yaml11_tag(text)
    if tag in (_INT, _BOOL) or (
        tag == _STR and text[:1] in _MAY_BE_UNSETTLED and unsettled(text) is not None
    ):
        return _UNSETTLED
    return tag


# How every string that YAML 1.1 reads as a string, yet YAML 1.2 or the YAML 1.1 type list
# reads as a number or boolean, begins (True, TRUE and the like PyYAML reads as booleans).
_MAY_BE_UNSETTLED = frozenset("+-.0123456789yYnN")


# Keys and small values repeat across a document (``mr_enclave`` a thousand times in a large
# manifest); only short texts are remembered, so the cache stays small.
_resolve_short = functools.lru_cache(maxsize=4096)(_resolve_plain)
_SHORT = 64


def _scalar_tag(text: str, implicit: tuple[bool, bool]) -> str:
    """The tag of a scalar without an explicit one: plain ones by ``_resolve_plain``,
    quoted and block ones are strings."""
    if not implicit[0]:
        return _STR
    return _resolve_short(text) if len(text) <= _SHORT else _resolve_plain(text)


class _StrictResolver:
    """The resolver of ``dump_yaml``: a string that the loader would not read back as a
    string is written quoted."""

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            return _STR if value is None else _scalar_tag(value, implicit)
        return _SEQ if kind is yaml.SequenceNode else _MAP


# libyaml's parser when PyYAML was built with it (several times faster on large
# manifests); values are built from its events by ``_StrictLoader.document`` either way.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_DEPTH = 64  # real documents nest 6 deep
_UNRESOLVED = (None, "!")  # no tag, or the non-specific one: resolved as above
_OPEN, _UNDEFINED = object(), object()  # anchor states: collection being read, no such anchor


def _line(event: yaml.Event) -> int:
    return 0 if event.start_mark is None else int(event.start_mark.line) + 1


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Builds values straight from the parser's events, without PyYAML's node graph or its
    constructors (a third of the time on a large manifest, and no garbage for the cycle
    collector): only the tags above are read, each in the spelling its tag allows."""

    def document(self) -> Any:
        self.get_event()  # stream start
        if self.check_event(yaml.StreamEndEvent):
            return None  # an empty document
        self.get_event()  # document start
        value = self._value(self.get_event(), 0, {})
        self.get_event()  # document end
        if not self.check_event(yaml.StreamEndEvent):
            raise InputError("", f"more than one YAML document (line {_line(self.peek_event())})")
        return value

    def _value(self, event: yaml.Event, depth: int, anchors: dict[str, Any]) -> Any:
        """The value that begins with ``event``; ``anchors`` maps each anchor to its value
        (``_OPEN`` while its collection is still being read)."""
        if isinstance(event, yaml.AliasEvent):
            # An alias is the value it names, not a copy: an alias bomb costs nothing.
            value = anchors.get(event.anchor or "", _UNDEFINED)
            if value is _UNDEFINED:
                raise InputError("", f"alias *{event.anchor} names no anchor (line {_line(event)})")
            if value is _OPEN:
                raise InputError(
                    "", f"an alias refers to a value that contains it (line {_line(event)})"
                )
            return value
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(event)
        elif depth >= _MAX_DEPTH:
            raise InputError("", f"nested more than {_MAX_DEPTH} levels deep (line {_line(event)})")
        elif isinstance(event, yaml.MappingStartEvent) and event.tag in (*_UNRESOLVED, _MAP):
            value = self._mapping(event, depth, anchors)
        elif isinstance(event, yaml.SequenceStartEvent) and event.tag in (*_UNRESOLVED, _SEQ):
            value = self._sequence(event, depth, anchors)
        else:
            tag = getattr(event, "tag", None)
            raise InputError(
                "", f"a value cannot be read: a collection tagged {tag} (line {_line(event)})"
            )
        if event.anchor is not None:
            anchors[event.anchor] = value
        return value

    def _mapping(
        self, start: yaml.MappingStartEvent, depth: int, anchors: dict[str, Any]
    ) -> dict[Any, Any]:
        if start.anchor is not None:
            anchors[start.anchor] = _OPEN
        mapping: dict[Any, Any] = {}
        while not isinstance(key_event := self.get_event(), yaml.MappingEndEvent):
            if not isinstance(key_event, yaml.ScalarEvent):
                raise InputError("", f"mapping keys must be plain values (line {_line(key_event)})")
            key = self._scalar(key_event)
            if key in mapping:
                raise InputError(str(key), f"duplicate key at line {_line(key_event)}")
            if key_event.anchor is not None:
                anchors[key_event.anchor] = key
            mapping[key] = self._value(self.get_event(), depth + 1, anchors)
        return mapping

    def _sequence(
        self, start: yaml.SequenceStartEvent, depth: int, anchors: dict[str, Any]
    ) -> list[Any]:
        if start.anchor is not None:
            anchors[start.anchor] = _OPEN
        items: list[Any] = []
        while not isinstance(event := self.get_event(), yaml.SequenceEndEvent):
            items.append(self._value(event, depth + 1, anchors))
        return items

    def _scalar(self, event: yaml.ScalarEvent) -> Any:
        text: str = event.value
        tag = event.tag
        if tag in _UNRESOLVED:
            tag = _scalar_tag(text, event.implicit)
        if tag == _STR:
            return text
        # An explicit tag (`!!int 010`) gets no more spellings than an implicit one.
        if tag == _INT and DECIMAL.fullmatch(text):
            return int(text)
        if tag == _BOOL and text in _BOOLEANS:
            return _BOOLEANS[text]
        if tag == _NULL and text in _NULLS:
            return None
        if tag == _UNSETTLED:
            found = unsettled(text)
            if found is not None:
                return found
        if tag == _MERGE:
            raise InputError(
                "", f"merge keys (<<) are YAML 1.1 only; write the fields out (line {_line(event)})"
            )
        if tag == _FLOAT:
            return self.construct_yaml_float(yaml.ScalarNode(tag, text))
        if tag == _TIMESTAMP:
            return self.construct_yaml_timestamp(yaml.ScalarNode(tag, text))
        raise InputError("", f"a value cannot be read: {text!r} tagged {tag} (line {_line(event)})")


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
    loader = _StrictLoader(text)
    try:
        document = loader.document()
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
    finally:
        loader.dispose()
    return expect_mapping(document, what)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    if isinstance(value, UnsettledScalar):
        return f"the plain scalar {value.text} ({value.readings})"
    return "null" if value is None else type(value).__name__


def expect_mapping(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(path, f"expected a mapping, got {type_name(value)}")
    for key in value:
        if isinstance(key, UnsettledScalar):
            raise InputError(
                join(path, key.text),
                f"this key is not a plain string ({key.readings}); put it in quotes",
            )
        if not isinstance(key, str):
            raise InputError(path, f"keys must be strings, got {key!r}")
    return value


def expect_keys(
    mapping: Mapping[str, Any], path: str, required: Iterable[str], optional: Iterable[str] = ()
) -> None:
    required = tuple(required)
    allowed = {*required, *optional}
    if mapping.keys() <= allowed and all(key in mapping for key in required):
        return  # the common case, checked before any message is worded
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise InputError(
            join(path, unknown[0]), f"unknown field (allowed: {', '.join(sorted(allowed))})"
        )
    for key in required:
        if key not in mapping:
            raise InputError(join(path, key), "missing required field")


def expect_int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, UnsettledScalar):
        advice = f"; write {' or '.join(map(str, value.integers))}" if value.integers else ""
        raise InputError(path, f"{value.text} is not a decimal integer ({value.readings}){advice}")
    # bool is an int subclass in Python; `debug: true` must not pass as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(path, f"expected an integer, got {type_name(value)} {value!r}")
    if not low <= value <= high:
        raise InputError(path, f"expected an integer in {low}..{high}, got {value}")
    return value


def expect_bool(value: object, path: str) -> bool:
    if isinstance(value, UnsettledScalar):
        advice = (
            f"; write {' or '.join(str(b).lower() for b in value.booleans)}"
            if value.booleans
            else ""
        )
        raise InputError(path, f"{value.text} is not true or false ({value.readings}){advice}")
    if not isinstance(value, bool):
        raise InputError(path, f"expected true or false, got {type_name(value)} {value!r}")
    return value


def expect_str(value: object, path: str, pattern: re.Pattern[str] | None = None) -> str:
    if isinstance(value, UnsettledScalar):
        # The value after ", got ", where callers that must not echo values cut it off.
        raise InputError(
            path, f"expected a string, got {value.text} ({value.readings}); put it in quotes"
        )
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
    if value.__class__ is str and len(value) == 2 * nbytes and _HEX.fullmatch(value):
        return bytes.fromhex(value)  # the common case first
    if isinstance(value, UnsettledScalar):
        raise InputError(
            path, f"YAML reads this hex value as a number ({value.readings}); put it in quotes"
        )
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


class _BlockDumper(_StrictResolver, yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PEM blocks read best (and diff cleanly) as literal blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_unsettled(dumper: yaml.SafeDumper, value: UnsettledScalar) -> yaml.ScalarNode:
    # Written back as it was read (plain), so the loader refuses it again with its reason.
    return dumper.represent_scalar(_UNSETTLED, value.text)


_BlockDumper.add_representer(str, _represent_str)
_BlockDumper.add_representer(UnsettledScalar, _represent_unsettled)


def dump_yaml(document: Mapping[str, Any]) -> bytes:
    return yaml.dump(
        dict(document), Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    ).encode()
