"""Checking a handler's JSON-RPC params against its annotations, before the handler runs.

Only what JSON can carry is supported, strictly: ``str``, ``int`` (a JSON ``true`` is not an
``int``), ``float`` (an integer is accepted), ``bool``, ``None``, ``list[X]``,
``dict[str, X]``, unions such as ``X | None``, ``Literal[...]``, and ``Any``/``object`` or
no annotation for anything. A handler annotated with any other type is refused when it is
registered, so a service never starts with a check it cannot make.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from teaclave_ma.errors import ConfigError

# Returns None when ``value`` fits, else what was wrong, naming the place inside the value.
Check = Callable[[Any, str], str | None]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # not from JSON; named all the same


def describe(annotation: Any) -> str:
    """The type as a service author wrote it (``list[str]``, ``int | None``)."""
    if annotation is type(None) or annotation is None:
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _scalar(kind: type | tuple[type, ...], what: str) -> Check:
    def check(value: Any, where: str) -> str | None:
        # bool is a subclass of int; a JSON true is not the integer 1.
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return None
        return f"{where} must be {what}, not {_json_kind(value)}"

    return check


def _anything(value: Any, where: str) -> str | None:
    return None


def _none(value: Any, where: str) -> str | None:
    return None if value is None else f"{where} must be None, not {_json_kind(value)}"


_SCALARS: dict[Any, Check] = {
    str: _scalar(str, "str"),
    int: _scalar(int, "int"),
    bool: _scalar(bool, "bool"),
    float: _scalar((int, float), "float"),  # a JSON integer is a fine float
    type(None): _none,
    None: _none,
    Any: _anything,
    object: _anything,
}


def checker(annotation: Any, where: str) -> Check:
    """The check for ``annotation``; ``ConfigError`` naming ``where`` if it is unsupported."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and len(args) == 1:
        return _list(checker(args[0], where))
    if origin is dict and len(args) == 2 and args[0] is str:
        return _dict(checker(args[1], where))
    if origin in (typing.Union, types.UnionType):
        return _union(annotation, [checker(arg, where) for arg in args])
    if origin is typing.Literal:
        return _literal(annotation, args)
    raise ConfigError(
        where,
        f"{describe(annotation)} cannot be checked on JSON input; use str, int, float, bool, "
        "None, list[X], dict[str, X], X | Y, Literal[...] or Any",
    )


def _list(item: Check) -> Check:
    def check(value: Any, where: str) -> str | None:
        if not isinstance(value, list):
            return f"{where} must be an array, not {_json_kind(value)}"
        for index, element in enumerate(value):
            problem = item(element, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None

    return check


def _dict(item: Check) -> Check:
    def check(value: Any, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"{where} must be an object, not {_json_kind(value)}"
        for key, element in value.items():
            problem = item(element, f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None

    return check


def _union(annotation: Any, options: list[Check]) -> Check:
    def check(value: Any, where: str) -> str | None:
        if any(option(value, where) is None for option in options):
            return None
        return f"{where} must be {describe(annotation)}, not {_json_kind(value)}"

    return check


def _literal(annotation: Any, allowed: tuple[Any, ...]) -> Check:
    def check(value: Any, where: str) -> str | None:
        # Compared with the type too, so that true does not match Literal[1].
        if any(type(value) is type(choice) and value == choice for choice in allowed):
            return None
        return f"{where} must be one of {', '.join(map(repr, allowed))}, not {value!r}"

    return check


def parameter_checks(
    function: Callable[..., Any], signature: inspect.Signature, handler: str
) -> dict[str, Check]:
    """A check per parameter of ``function`` after the first (the peer), from its hints."""
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # a name that does not resolve at registration, of any kind
        raise ConfigError(handler, f"its annotations cannot be resolved: {exc}") from exc
    names = [
        name
        for name, parameter in list(signature.parameters.items())[1:]
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    return {name: checker(hints.get(name, Any), f"{handler}.{name}") for name in names}
