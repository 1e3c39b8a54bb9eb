"""The PCCS client against a real local HTTP server serving the sample collateral."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pccs import PccsError, fetch_collateral
from tests.attestation.conftest import SAMPLE_TIME
from tests.helpers import run_cli

FMSPC = bytes.fromhex("00a067110000")


class FakePccs(http.server.ThreadingHTTPServer):
    """Serves one collateral set over Intel's PCS v4 paths, as a PCCS would."""

    def __init__(self, collateral: dict[str, str]) -> None:
        self.collateral = collateral
        self.requests: list[str] = []
        self.fail_with: int | None = None
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sgx/certification/v4"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakePccs

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.server.requests.append(url.path)
        c = self.server.collateral
        if self.server.fail_with:
            self.send_error(self.server.fail_with)
            return
        path = url.path.removeprefix("/sgx/certification/v4")
        if path == "/pckcrl" and query.get("ca") == ["processor"]:
            self._send(
                bytes.fromhex(c["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": c["pck_crl_issuer_chain"]}
            )
        elif path == "/tcb" and query.get("fmspc") == [FMSPC.hex().upper()]:
            body = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
            self._send(body.encode(), {"TCB-Info-Issuer-Chain": c["tcb_info_issuer_chain"]})
        elif path == "/qe/identity":
            body = (
                '{"enclaveIdentity": '
                + c["qe_identity"]
                + ', "signature":"'
                + c["qe_identity_signature"]
                + '"}'
            )
            self._send(
                body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": c["qe_identity_issuer_chain"]}
            )
        elif path == "/rootcacrl":
            self._send(c["root_ca_crl"].encode(), {})  # this PCCS answers with hex text
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
    server = FakePccs(json.loads(sgx_collateral))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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


def test_unreachable_pccs_falls_back_to_a_still_valid_cache(
    pccs: FakePccs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    url = pccs.url
    pccs.shutdown()
    pccs.server_close()
    # close to expiry a refresh is attempted; it fails, and the cache is still valid
    late = dt.datetime(2025, 7, 19, 9, 0, tzinfo=dt.UTC)
    assert fetch_collateral(url, FMSPC, "processor", tmp_path, now=late) == first
    assert "PCCS unreachable" in caplog.text


def test_expired_cache_and_unreachable_pccs_is_an_error(pccs: FakePccs, tmp_path: Path) -> None:
    fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    url = pccs.url
    pccs.shutdown()
    pccs.server_close()
    with pytest.raises(PccsError, match="no valid cached collateral"):
        fetch_collateral(
            url, FMSPC, "processor", tmp_path, now=dt.datetime(2025, 8, 1, tzinfo=dt.UTC)
        )


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_are_typed_and_name_the_url(
    pccs: FakePccs, tmp_path: Path, status: int
) -> None:
    pccs.fail_with = status
    with pytest.raises(PccsError) as caught:
        fetch_collateral(pccs.url, FMSPC, "processor", tmp_path, now=SAMPLE_TIME)
    assert f"HTTP {status}" in str(caught.value)
    assert "/pckcrl" in caught.value.field


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
