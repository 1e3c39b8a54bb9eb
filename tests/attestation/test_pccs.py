"""The PCCS client against a real local HTTP server serving the sample collateral."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pccs import (
    PccsError,
    PccsUnreachable,
    _signed_member,
    _top_level_members,
    fetch_collateral,
    fetch_collateral_for,
)
from teaclave_ma.attestation.quote import parse_quote
from teaclave_ma.attestation.sim import pki as sim_pki
from teaclave_ma.attestation.sim.platform import SimulatedPlatform
from tests.attestation.conftest import SAMPLE_TIME
from tests.helpers import run_cli

FMSPC = bytes.fromhex("00a067110000")


def signed_response(member: str, value: str, signature: str) -> str:
    """A PCS answer as Intel writes it: the signed member, then its signature."""
    return f'{{"{member}":{value},"signature":"{signature}"}}'


ResponseBody = Callable[[str, str, str], str]


def _fmspc_of(collateral: dict[str, str]) -> str:
    return str(json.loads(collateral["tcb_info"])["fmspc"]).upper()


class FakePccs(http.server.ThreadingHTTPServer):
    """Serves one collateral set over Intel's PCS v4 paths, as a PCCS would: its TCB info
    and QE identity under the API of ``tee`` (/sgx/... or /tdx/...), the CRLs under /sgx.
    As ``pcs``, like Intel's PCS itself: no /rootcacrl, the root CA CRL at ``crl_path``."""

    def __init__(self, collateral: dict[str, str], tee: str = "SGX") -> None:
        self.collateral = collateral
        self.tee = tee.lower()
        self.requests: list[str] = []
        self.queries: list[dict[str, list[str]]] = []
        self.fail_with: int | None = None
        self.pcs = False
        self.crl_path = "/IntelSGXRootCA.der"
        self.body: ResponseBody = signed_response  # how TCB info and QE identity are written
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/sgx/certification/v4"


@contextlib.contextmanager
def serving(collateral: bytes, tee: str = "SGX") -> Iterator[FakePccs]:
    """A fake PCCS on loopback until the block ends (or until the caller shuts it down)."""
    server = FakePccs(json.loads(collateral), tee)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakePccs

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.server.requests.append(url.path)
        self.server.queries.append(query)
        c = self.server.collateral
        if self.server.fail_with:
            self.send_error(self.server.fail_with)
            return
        sgx_path = url.path.removeprefix("/sgx/certification/v4")
        tee_path = url.path.removeprefix(f"/{self.server.tee}/certification/v4")
        issuer = x509.load_pem_x509_certificates(c["pck_crl_issuer_chain"].encode())[0]
        ca = "processor" if "Processor" in issuer.subject.rfc4514_string() else "platform"
        if sgx_path == "/pckcrl" and query.get("ca") == [ca]:
            self._send(
                bytes.fromhex(c["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": c["pck_crl_issuer_chain"]}
            )
        elif tee_path == "/tcb" and query.get("fmspc") == [_fmspc_of(c)]:
            body = self.server.body("tcbInfo", c["tcb_info"], c["tcb_info_signature"])
            self._send(body.encode(), {"TCB-Info-Issuer-Chain": c["tcb_info_issuer_chain"]})
        elif tee_path == "/qe/identity":
            body = self.server.body("enclaveIdentity", c["qe_identity"], c["qe_identity_signature"])
            self._send(
                body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": c["qe_identity_issuer_chain"]}
            )
        elif sgx_path == "/rootcacrl" and not self.server.pcs:
            self._send(c["root_ca_crl"].encode(), {})  # this PCCS answers with hex text
        elif url.path == self.server.crl_path and self.server.pcs:
            self._send(bytes.fromhex(c["root_ca_crl"]), {})  # a CRL distribution point: DER
        else:
            self.send_error(404)

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, urllib.parse.quote(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def pccs(sgx_collateral: bytes) -> Iterator[FakePccs]:
    with serving(sgx_collateral) as server:
        yield server


def test_fetched_collateral_equals_the_sample_field_by_field(
    pccs: FakePccs, sgx_collateral: bytes, tmp_path: Path
) -> None:
    fetched = json.loads(fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME))
    assert fetched == json.loads(sgx_collateral)
    assert Collateral.from_json(json.dumps(fetched)).tcb_info.fmspc == FMSPC


def test_valid_cache_is_used_without_a_request(pccs: FakePccs, tmp_path: Path) -> None:
    first = fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    count = len(pccs.requests)
    assert fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME) == first
    assert len(pccs.requests) == count


def test_a_client_error_is_typed_and_names_the_url(pccs: FakePccs, tmp_path: Path) -> None:
    pccs.fail_with = 404
    with pytest.raises(PccsError) as caught:
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    assert not isinstance(caught.value, PccsUnreachable)  # a wrong request, not an outage
    assert "HTTP 404" in str(caught.value)
    assert "/pckcrl" in caught.value.field


def test_a_server_error_without_cache_is_an_outage(pccs: FakePccs, tmp_path: Path) -> None:
    pccs.fail_with = 503
    with pytest.raises(PccsUnreachable) as caught:
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    assert caught.value.url == pccs.url
    assert "/pckcrl: HTTP 503" in caught.value.reason
    assert caught.value.stale == ()
    assert "no cached collateral for FMSPC 00a067110000 (processor CA)" in str(caught.value)


def _decoy_before(member: str, value: str, signature: str) -> str:
    # The member's name as a string value and as a nested key, before the real member.
    decoy = f'{{"kind": "{member}", "note": 1, "meta": {{"{member}": {{"x": 1}}}},\n'
    return decoy + f'  "signature"\t:\r\n "{signature}" ,\n  "{member}"  :\n\t{value}\n}}\n'


def _escaped_name(member: str, value: str, signature: str) -> str:
    # JSON may spell a member name with escapes: the name is what counts, not its text.
    escaped = "".join(f"\\u{ord(char):04x}" for char in member)
    return f'{{"{escaped}": {value}, "signature": "{signature}"}}'


@pytest.mark.parametrize("body", [_decoy_before, _escaped_name])
def test_signed_members_are_found_by_walking_the_object(
    pccs: FakePccs, sgx_collateral: bytes, tmp_path: Path, body: ResponseBody
) -> None:
    pccs.body = body
    fetched = json.loads(fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME))
    expected = json.loads(sgx_collateral)
    for field in ("tcb_info", "tcb_info_signature", "qe_identity", "qe_identity_signature"):
        assert fetched[field] == expected[field]  # byte for byte: the signatures cover these


def _twice(member: str, value: str, signature: str) -> str:
    return f'{{"{member}": {{}}, "{member}": {value}, "signature": "{signature}"}}'


def _trailing(member: str, value: str, signature: str) -> str:
    return signed_response(member, value, signature) + "{}"


def _not_an_object(member: str, value: str, signature: str) -> str:
    return f'[{{"{member}": {value}, "signature": "{signature}"}}]'


def _unsigned(member: str, value: str, signature: str) -> str:
    return f'{{"{member}": {value}, "signature": 7}}'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (_twice, "'tcbInfo' appears twice"),
        (_trailing, "unexpected text after the object"),
        (_not_an_object, "not one JSON object"),
        (_unsigned, "signature is not a string"),
        (lambda member, value, signature: value, "no 'tcbInfo' with a signature"),
    ],
)
def test_ambiguous_or_malformed_responses_are_refused(
    pccs: FakePccs, tmp_path: Path, body: ResponseBody, problem: str
) -> None:
    pccs.body = body
    with pytest.raises(PccsError, match=problem) as caught:
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    assert "/tcb" in caught.value.field


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    members=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=5),
    spacing=st.sampled_from(["", " ", "\n\t", "\r\n  "]),
    ascii_only=st.booleans(),
)
def test_member_spans_hold_exactly_each_value(
    members: dict[str, object], spacing: str, ascii_only: bool
) -> None:
    text = json.dumps(
        members, ensure_ascii=ascii_only, indent=spacing or None, separators=(",", ": ")
    )
    spans = _top_level_members(text)
    assert spans.keys() == members.keys()
    for name, (start, end) in spans.items():
        assert json.loads(text[start:end]) == members[name]


@given(st.text(max_size=64) | st.binary(max_size=64).map(lambda b: b.decode("latin-1")))
def test_any_text_is_an_object_or_a_pccs_error(text: str) -> None:
    try:
        _signed_member(text, "tcbInfo", "https://pccs.test/tcb")
    except PccsError as exc:
        assert exc.field == "https://pccs.test/tcb"


def test_unknown_ca_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PccsError, match="platform, processor"):
        fetch_collateral("http://127.0.0.1:9", FMSPC, "intel", tmp_path)


def test_quote_verify_fetches_collateral_from_a_pccs(
    pccs: FakePccs, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run_cli(
        capsys, "quote", "verify", str(shared_data / "sgx" / "quote.bin"), "--pccs", pccs.url,
        "--pccs-cache", str(tmp_path), "--at", "2025-07-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 1  # fetched and verified; refused by the default policy only
    assert data["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert "/sgx/certification/v4/tcb" in pccs.requests


# -- TDX collateral, update=early|standard, Intel's PCS without /rootcacrl ----------------------


def test_tdx_quotes_get_the_tdx_tcb_info_and_td_qe_identity(
    tdx_quote: bytes, tdx_collateral: bytes, tmp_path: Path
) -> None:
    """Intel's PCS and PCCS serve TDX TCB info and the TD QE's identity under
    /tdx/certification/v4; the CRLs stay under /sgx."""
    with serving(tdx_collateral, tee="TDX") as pccs:
        fetched = fetch_collateral_for(parse_quote(tdx_quote), pccs.url, tmp_path, now=SAMPLE_TIME)
    assert json.loads(fetched) == json.loads(tdx_collateral)
    assert "/tdx/certification/v4/tcb" in pccs.requests
    assert "/tdx/certification/v4/qe/identity" in pccs.requests
    assert "/sgx/certification/v4/tcb" not in pccs.requests
    assert list(tmp_path.iterdir()) == [tmp_path / "b0c06f000000-platform-tdx.json"]


def test_the_tdx_api_url_means_the_same_service(
    tdx_quote: bytes, tdx_collateral: bytes, tmp_path: Path
) -> None:
    with serving(tdx_collateral, tee="TDX") as pccs:
        tdx_url = pccs.url.replace("/sgx/", "/tdx/")
        fetched = fetch_collateral_for(parse_quote(tdx_quote), tdx_url, tmp_path, now=SAMPLE_TIME)
    assert json.loads(fetched) == json.loads(tdx_collateral)


def test_a_url_of_no_pccs_api_is_refused(sgx_quote: bytes, tmp_path: Path) -> None:
    with pytest.raises(PccsError, match="expected a PCCS URL ending in /sgx/certification/v4"):
        fetch_collateral_for(parse_quote(sgx_quote), "http://127.0.0.1:9/", tmp_path)


def test_update_is_asked_for_and_cached_apart(pccs: FakePccs, tmp_path: Path) -> None:
    fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    assert {"fmspc": [FMSPC.hex().upper()], "update": ["standard"]} in pccs.queries
    count = len(pccs.requests)
    fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME, update="early")
    assert len(pccs.requests) > count  # not served from the standard cache
    assert {"update": ["early"]} in pccs.queries
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "00a067110000-processor-early.json",
        "00a067110000-processor.json",
    ]
    with pytest.raises(PccsError, match="expected one of standard, early"):
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, update="late")


def _with_root_crl_at(platform: SimulatedPlatform, url: str | None) -> dict[str, str]:
    """The platform's SGX collateral, its root reissued (same key and name) with a CRL
    distribution point at ``url`` (or none), in every issuer chain."""
    old = platform.certs["root"]
    points = (
        [x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(url)], None, None, None
        )])]
        if url else []
    )  # fmt: skip
    root = sim_pki.issue(
        sim_pki.ROOT_CN, platform.keys["root"], None, platform.keys["root"], ca=True,
        not_before=old.not_valid_before_utc, not_after=old.not_valid_after_utc, extensions=points,
    )  # fmt: skip
    old_pem, new_pem = (c.public_bytes(serialization.Encoding.PEM).decode() for c in (old, root))
    return {
        field: value.replace(old_pem, new_pem) if field.endswith("_chain") else value
        for field, value in platform.collateral["SGX"].items()
    }


def test_against_intels_pcs_the_root_crl_comes_from_its_distribution_point(
    tmp_path: Path,
) -> None:
    """Intel's PCS has no /rootcacrl; the root CA certificate names where its CRL is."""
    platform = SimulatedPlatform.create()
    fmspc = bytes.fromhex(platform.settings["fmspc"])
    with serving(b"{}") as pccs:
        pccs.collateral = _with_root_crl_at(platform, pccs.origin + pccs.crl_path)
        pccs.pcs = True
        fetched = json.loads(fetch_collateral(pccs.url, fmspc, "platform", tmp_path))
        assert "/sgx/certification/v4/rootcacrl" in pccs.requests
        assert pccs.crl_path in pccs.requests
    assert fetched["root_ca_crl"] == platform.collateral["SGX"]["root_ca_crl"]


def test_without_rootcacrl_or_a_distribution_point_the_error_says_so(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create()
    with serving(b"{}") as pccs:
        pccs.collateral = _with_root_crl_at(platform, None)
        pccs.pcs = True
        with pytest.raises(PccsError, match="names no CRL distribution point") as caught:
            fetch_collateral(
                pccs.url, bytes.fromhex(platform.settings["fmspc"]), "platform", tmp_path
            )
    assert caught.value.field.endswith("/sgx/certification/v4/rootcacrl")
