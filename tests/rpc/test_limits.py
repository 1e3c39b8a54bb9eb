"""The server's limits read from a ``limits:`` mapping (for the measured service.yaml)."""

from __future__ import annotations

import pytest

from teaclave_ma.errors import InputError
from teaclave_ma.formats.limits import ServerLimits, parse_limits


def test_missing_fields_keep_their_defaults_and_given_ones_are_read() -> None:
    assert parse_limits({}, "limits") == ServerLimits()
    assert parse_limits(
        {"max_handshakes": 64, "max_handshakes_per_source": 4, "handshake_timeout": 2.5}, "limits"
    ) == ServerLimits(max_handshakes=64, max_handshakes_per_source=4, handshake_timeout=2.5)
    assert parse_limits({"idle_timeout": 30}, "limits").idle_timeout == 30.0


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ([], "limits", "expected a mapping, got list"),
        ({"max_handshake": 1}, "limits.max_handshake", "unknown field"),
        ({"max_connections": 0}, "limits.max_connections", "expected an integer in 1..1048576"),
        ({"max_handshakes": True}, "limits.max_handshakes", "expected an integer, got bool"),
        ({"max_request_bytes": "1M"}, "limits.max_request_bytes", "expected an integer, got str"),
        ({"handshake_timeout": 0}, "limits.handshake_timeout", "more than 0 and at most 3600"),
        ({"idle_timeout": False}, "limits.idle_timeout", "a number of seconds, got bool"),
        (
            {"max_connections": 8, "max_handshakes": 16},
            "limits.max_handshakes",
            "16 is more than max_connections (8)",
        ),
        (
            {"max_handshakes_per_source": 300},
            "limits.max_handshakes_per_source",
            "300 is more than max_handshakes (256)",
        ),
    ],
)
def test_unusable_limits_are_refused_naming_the_field(
    value: object, field: str, problem: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_limits(value, "limits")
    assert caught.value.field == field
    assert problem in caught.value.problem
