"""Collateral: TCB info (JSON v2 and v3), QE identity, and the collateral document around
them. Any input parses or raises the library's own error."""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzzing.targets import real_sample, simulated_platform
from teaclave_ma.attestation.collateral import Collateral, parse_qe_identity, parse_tcb_info
from tests.fuzz.mutations import FUZZ, mutated, parses_or_refuses, tree_mutated

SIGNED_FIELDS = ("tcb_info", "qe_identity")


@functools.cache
def collateral_documents() -> list[dict[str, str]]:
    documents = [json.loads(real_sample(f"{tee}/collateral.json")) for tee in ("sgx", "tdx")]
    return [*documents, json.loads(simulated_platform().collateral_json("TDX"))]


def as_v2(tcb_info: dict[str, Any]) -> dict[str, Any]:
    """The same TCB info in the v2 JSON layout (no id, sgxtcbcompNNsvn fields)."""
    levels = []
    for level in tcb_info["tcbLevels"]:
        tcb = {
            f"sgxtcbcomp{i:02d}svn": component["svn"]
            for i, component in enumerate(level["tcb"]["sgxtcbcomponents"], start=1)
        }
        levels.append({**level, "tcb": {**tcb, "pcesvn": level["tcb"]["pcesvn"]}})
    rest = {
        k: v for k, v in tcb_info.items() if k not in ("id", "tdxModuleIdentities", "tdxModule")
    }
    return {**rest, "version": 2, "tcbLevels": levels}


@functools.cache
def tcb_infos() -> list[dict[str, Any]]:
    v3 = [json.loads(document["tcb_info"]) for document in collateral_documents()]
    return [*v3, as_v2(v3[0])]


@functools.cache
def qe_identities() -> list[dict[str, Any]]:
    return [json.loads(document["qe_identity"]) for document in collateral_documents()]


def test_samples_parse_in_both_tcb_info_versions() -> None:
    versions = {parse_tcb_info(json.dumps(info).encode()).version for info in tcb_infos()}
    assert versions == {2, 3}
    for identity in qe_identities():
        assert parse_qe_identity(json.dumps(identity).encode()).levels


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


@FUZZ
@given(st.deferred(lambda: st.sampled_from(tcb_infos()).flatmap(tree_mutated)))
def test_tcb_info_tree_mutations(document: Any) -> None:
    parses_or_refuses(parse_tcb_info, _json(document))


@FUZZ
@given(st.deferred(lambda: st.sampled_from([_json(i) for i in tcb_infos()]).flatmap(mutated)))
def test_tcb_info_byte_mutations(data: bytes) -> None:
    parses_or_refuses(parse_tcb_info, data)


@FUZZ
@given(st.deferred(lambda: st.sampled_from(qe_identities()).flatmap(tree_mutated)))
def test_qe_identity_tree_mutations(document: Any) -> None:
    parses_or_refuses(parse_qe_identity, _json(document))


@FUZZ
@given(st.deferred(lambda: st.sampled_from([_json(i) for i in qe_identities()]).flatmap(mutated)))
def test_qe_identity_byte_mutations(data: bytes) -> None:
    parses_or_refuses(parse_qe_identity, data)


@FUZZ
@given(st.binary(max_size=512) | st.text(max_size=200).map(str.encode))
def test_random_input_to_every_collateral_parser(data: bytes) -> None:
    for parser in (parse_tcb_info, parse_qe_identity, Collateral.from_json):
        parses_or_refuses(parser, data)


@FUZZ
@given(data=st.data())
def test_collateral_document_mutations(data: st.DataObject) -> None:
    """One field of the collateral document changed: a PEM chain, a CRL's hex, a signature,
    or (as a JSON tree, kept a string as Intel signs it) the TCB info or QE identity."""
    document = dict(data.draw(st.sampled_from(collateral_documents())))
    field = data.draw(st.sampled_from(sorted(document)))
    if field in SIGNED_FIELDS:
        document[field] = json.dumps(data.draw(tree_mutated(json.loads(document[field]))))
    else:
        changed = data.draw(mutated(document[field].encode()))
        document[field] = changed.decode("utf-8", errors="replace")
    parses_or_refuses(Collateral.from_json, json.dumps(document))
