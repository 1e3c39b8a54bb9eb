"""Handler parameters are checked against their annotations before the handler runs."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from teaclave_ma.errors import ConfigError
from teaclave_ma.rpc import jsonrpc
from teaclave_ma.rpc.jsonrpc import RpcError
from teaclave_ma.rpc.service import Service
from teaclave_ma.transport.peer_verify import PeerIdentity
from tests.rpc.test_jsonrpc import PEER


def typed_service() -> tuple[Service, list[dict[str, Any]]]:
    service = Service("typed")
    seen: list[dict[str, Any]] = []

    @service.handler()
    def store(
        peer: PeerIdentity,
        key: str,
        count: int,
        ratio: float,
        flag: bool,
        tags: list[str],
        scores: dict[str, int],
        note: str | None = None,
        mode: Literal["fast", "safe"] = "safe",
        extra: Any = None,
    ) -> bool:
        seen.append(dict(key=key, count=count, ratio=ratio, tags=tags, mode=mode, extra=extra))
        return True

    return service, seen


GOOD = {
    "key": "k",
    "count": 3,
    "ratio": 1,  # a JSON integer is a fine float
    "flag": False,
    "tags": ["a"],
    "scores": {"x": 1},
}


def test_well_typed_params_reach_the_handler() -> None:
    service, seen = typed_service()
    params = {**GOOD, "note": None, "mode": "fast", "extra": {"any": [1]}}
    assert service.dispatch(PEER, "store", params) is True
    assert seen[0]["mode"] == "fast" and seen[0]["extra"] == {"any": [1]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": 1}, "parameter 'key' must be str, not an integer"),
        ({"count": True}, "parameter 'count' must be int, not a boolean"),
        ({"count": 1.5}, "parameter 'count' must be int, not a number"),
        ({"ratio": "1"}, "parameter 'ratio' must be float, not a string"),
        ({"flag": 0}, "parameter 'flag' must be bool, not an integer"),
        ({"tags": "a"}, "parameter 'tags' must be an array, not a string"),
        ({"tags": ["a", 2]}, "parameter 'tags'[1] must be str, not an integer"),
        ({"scores": {"x": "1"}}, "parameter 'scores'['x'] must be int, not a string"),
        ({"scores": [1]}, "parameter 'scores' must be an object, not an array"),
        ({"note": 5}, "parameter 'note' must be str | None, not an integer"),
        ({"mode": "slow"}, "parameter 'mode' must be one of 'fast', 'safe', not 'slow'"),
    ],
)
def test_a_mismatch_answers_invalid_params_naming_parameter_and_type(
    change: dict[str, Any], message: str
) -> None:
    service, seen = typed_service()
    with pytest.raises(RpcError) as caught:
        service.dispatch(PEER, "store", {**GOOD, **change})
    assert caught.value.code == jsonrpc.INVALID_PARAMS
    assert caught.value.message == f"store: {message}"
    assert seen == []  # the handler never ran


def test_a_literal_does_not_confuse_true_with_one() -> None:
    service = Service("s")

    @service.handler()
    def pick(peer: PeerIdentity, level: Literal[1, 2]) -> int:
        return level

    assert service.dispatch(PEER, "pick", {"level": 2}) == 2
    with pytest.raises(RpcError, match="must be one of 1, 2, not True"):
        service.dispatch(PEER, "pick", {"level": True})


class Opaque:
    pass


def test_an_uncheckable_annotation_is_refused_at_registration() -> None:
    service = Service("s")
    with pytest.raises(ConfigError, match=r"handler put.value: Opaque cannot be checked"):

        @service.handler()
        def put(peer: PeerIdentity, value: Opaque) -> None: ...

    with pytest.raises(ConfigError, match=r"handler get.key: bytes cannot be checked"):

        @service.handler()
        def get(peer: PeerIdentity, key: bytes) -> None: ...

    with pytest.raises(ConfigError, match=r"dict\[int, str\] cannot be checked"):

        @service.handler()
        def scan(peer: PeerIdentity, index: dict[int, str]) -> None: ...


def test_an_unresolvable_annotation_is_refused_at_registration() -> None:
    service = Service("s")
    with pytest.raises(ConfigError, match="handler h: its annotations cannot be resolved"):

        @service.handler()
        def h(peer: PeerIdentity, value: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821
