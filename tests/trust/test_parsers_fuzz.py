"""Any bytes given to a document parser yield a value or the library's own error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teaclave_ma.errors import TeaclaveMAError
from teaclave_ma.formats.manifest import parse_manifest
from teaclave_ma.formats.service_config import parse_service_config
from teaclave_ma.formats.signature import parse_signature
from teaclave_ma.formats.trust import parse_trust_file
from teaclave_ma.testing import AuditorPanel

PARSERS: list[Callable[[bytes], object]] = [
    parse_manifest,
    parse_trust_file,
    parse_signature,
    parse_service_config,
]
PANEL = AuditorPanel()
SAMPLES = [
    PANEL.manifest({}, version=1),
    PANEL.trust_bytes,
    PANEL.sign(b"x")[0][1],
    b"name: storage\nentrypoint: m:f\nenclave: {isv_prod_id: 1, isv_svn: 1}\n",
]


@pytest.mark.parametrize("parser", PARSERS)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(TeaclaveMAError):
        parser(data)


@pytest.mark.parametrize("index", range(len(PARSERS)))
@settings(max_examples=150, deadline=None)
@given(choice=st.data())
def test_mutated_valid_documents(index: int, choice: st.DataObject) -> None:
    sample = SAMPLES[index]
    position = choice.draw(st.integers(0, len(sample) - 1))
    value = choice.draw(st.integers(0, 255))
    with contextlib.suppress(TeaclaveMAError):
        PARSERS[index](sample[:position] + bytes([value]) + sample[position + 1 :])
