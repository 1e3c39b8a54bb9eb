"""JSON-RPC 2.0 messages: decoding requests strictly, encoding results and errors.

Only named parameters (a JSON object) are supported, and no batches: every handler
receives keyword arguments. Errors carry a code and a message, never a traceback.

Both directions decode UTF-8 JSON only (RFC 8259 section 8.1) nested at most ``MAX_DEPTH``
arrays and objects deep: the depth is measured on the text before it is parsed, so a
hostile peer's ``[[[[...`` is a parse error, never a ``RecursionError`` in the reader.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import attrs

from teaclave_ma.errors import TeaclaveMAError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Application errors use the implementation-defined range -32000..-32099.
NOT_ALLOWED = -32001

RequestId = str | int | None


class RpcError(TeaclaveMAError):
    """A JSON-RPC error: raised by handlers to answer with it, and by clients on receiving one."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"RPC error {code}: {message}")


# Far deeper than any message of the services; far below the interpreter's recursion limit.
MAX_DEPTH = 64

# A string literal, to its closing quote or, unterminated, to the end of the text: every
# match attempt succeeds, so removing them is one linear pass whatever the input.
_STRING = re.compile(r'"(?:[^"\\]++|\\(?:.|\Z))*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text``, brackets inside strings not counted.

    For a prefix that the JSON parser accepts this is exactly its depth (it delimits strings
    the same way), so the parser never nests deeper than this before it succeeds or fails."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def parse_json(body: bytes, what: str) -> Any:
    """``body`` parsed as UTF-8 JSON of at most ``MAX_DEPTH`` levels; ``RpcError`` -32700
    naming ``what`` (request or response) otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"{what} is not UTF-8 (byte {exc.start})") from exc
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise RpcError(
            PARSE_ERROR, f"{what} nests {depth} levels deep, more than the limit of {MAX_DEPTH}"
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RpcError(PARSE_ERROR, f"{what} is not valid JSON: {exc}") from exc


@attrs.frozen
class Request:
    id: RequestId
    method: str
    params: dict[str, Any]


def decode_request(body: bytes) -> Request:
    message = parse_json(body, "request")
    if not isinstance(message, dict):
        raise RpcError(INVALID_REQUEST, "request must be a JSON object (batches are not supported)")
    if message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'request must have "jsonrpc": "2.0"')
    request_id = message.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int)
    ):
        raise RpcError(INVALID_REQUEST, "id must be a string, an integer or null")
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "method must be a non-empty string")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be a JSON object of named parameters")
    unknown = set(message) - {"jsonrpc", "id", "method", "params"}
    if unknown:
        raise RpcError(INVALID_REQUEST, f"unknown request members: {', '.join(sorted(unknown))}")
    return Request(request_id, method, params)


def encode_request(request_id: int, method: str, params: dict[str, Any]) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    ).encode()


def encode_result(request_id: RequestId, result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def encode_error(request_id: RequestId, error: RpcError) -> bytes:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": body}).encode()


def decode_response(body: bytes, expected_id: int) -> Any:
    """The result of a response, or the RpcError it carries."""
    message = parse_json(body, "response")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "response is not a JSON-RPC 2.0 object")
    response_id = message.get("id")
    # A server that could not read a request's id answers its error with id null (JSON-RPC
    # 2.0, section 5); one request at a time is in flight on a connection, so it is ours.
    if response_id != expected_id and not (response_id is None and "error" in message):
        raise RpcError(
            INVALID_REQUEST, f"response id {response_id!r} does not match request {expected_id}"
        )
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise RpcError(INVALID_REQUEST, "malformed error object in response")
        raise RpcError(error["code"], str(error.get("message", "")), error.get("data"))
    if "result" not in message:
        raise RpcError(INVALID_REQUEST, "response has neither result nor error")
    return message["result"]
