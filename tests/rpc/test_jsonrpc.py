from __future__ import annotations

import json

import pytest

from teaclave_ma.errors import ConfigError
from teaclave_ma.identity import SgxIdentity
from teaclave_ma.rpc import jsonrpc
from teaclave_ma.rpc.jsonrpc import (
    RpcError,
    decode_request,
    decode_response,
    encode_error,
    encode_result,
)
from teaclave_ma.rpc.service import Service
from teaclave_ma.transport.peer_verify import PeerIdentity

PEER = PeerIdentity(
    service="frontend",
    identity=SgxIdentity(b"\x01" * 32, b"\x02" * 32, 2, 1, False),
    tcb_status="UpToDate",
    advisory_ids=(),
    manifest_version=1,
    certificate_sha256=b"\x00" * 32,
)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", jsonrpc.PARSE_ERROR),
        (b"\xff\xfe", jsonrpc.PARSE_ERROR),
        ('{"jsonrpc": "2.0", "id": 1, "method": "x"}'.encode("utf-16"), jsonrpc.PARSE_ERROR),
        (b"[]", jsonrpc.INVALID_REQUEST),
        (b'{"id": 1, "method": "x"}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": true, "method": "x"}', jsonrpc.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]}', jsonrpc.INVALID_PARAMS),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "extra": 1}', jsonrpc.INVALID_REQUEST),
    ],
)
def test_malformed_requests_get_the_specific_json_rpc_error(body: bytes, code: int) -> None:
    with pytest.raises(RpcError) as caught:
        decode_request(body)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "\\"]]]]", {"}": "{{"}]', 2),  # brackets in strings, escaped quotes
        ('"unterminated [[[[', 0),  # the rest of the text is the string
        ('"\\' + '\\"' * 1000, 0),  # linear, however the quotes are escaped
        ("[" * 100_000, 100_000),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert jsonrpc.nesting_depth(text) == depth


@pytest.mark.parametrize("direction", ["request", "response"])
def test_json_nested_deeper_than_the_limit_is_a_parse_error(direction: str) -> None:
    deep = jsonrpc.MAX_DEPTH + 1
    at_limit = b'{"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"v": %s}}' % (
        b"[" * (jsonrpc.MAX_DEPTH - 2) + b"]" * (jsonrpc.MAX_DEPTH - 2)
    )
    assert decode_request(at_limit).params["v"] is not None
    body = b"[" * deep + b"]" * deep
    with pytest.raises(RpcError) as caught:
        if direction == "request":
            decode_request(body)
        else:
            decode_response(body, 1)
    assert caught.value.code == jsonrpc.PARSE_ERROR
    assert f"{direction} nests {deep} levels deep, more than the limit of 64" in str(caught.value)


def test_request_round_trip() -> None:
    request = decode_request(jsonrpc.encode_request(7, "get", {"key": "k"}))
    assert (request.id, request.method, request.params) == (7, "get", {"key": "k"})


def test_response_decoding_checks_id_and_carries_errors() -> None:
    assert decode_response(encode_result(3, {"a": 1}), 3) == {"a": 1}
    with pytest.raises(RpcError, match="does not match request 4"):
        decode_response(encode_result(3, None), 4)
    with pytest.raises(RpcError) as caught:
        decode_response(encode_error(5, RpcError(-32001, "no", {"why": "x"})), 5)
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32001,
        "no",
        {"why": "x"},
    )
    with pytest.raises(RpcError, match="neither result nor error"):
        decode_response(json.dumps({"jsonrpc": "2.0", "id": 1}).encode(), 1)


def test_service_dispatch_passes_the_verified_peer_and_named_params() -> None:
    service = Service("storage")

    @service.handler()
    def whoami(peer: PeerIdentity, suffix: str = "") -> str:
        return peer.service + suffix

    assert service.dispatch(PEER, "whoami", {"suffix": "!"}) == "frontend!"
    with pytest.raises(RpcError) as missing:
        service.dispatch(PEER, "nope", {})
    assert missing.value.code == jsonrpc.METHOD_NOT_FOUND
    with pytest.raises(RpcError) as bad:
        service.dispatch(PEER, "whoami", {"unknown": 1})
    assert bad.value.code == jsonrpc.INVALID_PARAMS


def test_handler_failures_become_internal_errors_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Service("storage")

    @service.handler()
    def boom(peer: PeerIdentity) -> None:
        raise KeyError("secret-internal-detail")

    with pytest.raises(RpcError) as caught:
        service.dispatch(PEER, "boom", {})
    assert caught.value.code == jsonrpc.INTERNAL_ERROR
    assert "secret-internal-detail" not in caught.value.message
    assert "secret-internal-detail" in caplog.text  # the operator still sees it


def test_a_handler_name_cannot_be_registered_twice() -> None:
    service = Service("s")

    @service.handler("x")
    def first(peer: PeerIdentity) -> None: ...

    with pytest.raises(ConfigError, match="registered twice"):

        @service.handler("x")
        def second(peer: PeerIdentity) -> None: ...
