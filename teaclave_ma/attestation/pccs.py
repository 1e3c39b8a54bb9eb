"""Collateral from an Intel PCS or a PCCS (API v4), cached on disk until it expires.

Requests (under ``base_url``, e.g. ``https://pccs.example:8081/sgx/certification/v4``):
``/pckcrl?ca=platform|processor&encoding=der`` (issuer chain in ``SGX-PCK-CRL-Issuer-Chain``),
``/tcb?fmspc=HEX`` (``TCB-Info-Issuer-Chain``), ``/qe/identity``
(``SGX-Enclave-Identity-Issuer-Chain``) and ``/rootcacrl``. Issuer chains arrive URL-encoded.
The signed ``tcbInfo`` and ``enclaveIdentity`` values are sliced out of the response text
byte for byte, never re-serialised, because their signatures cover those exact bytes.

The result is collateral JSON in the QuoteCollateralV3 layout, cached per FMSPC and CA.
A cached collateral is used without a request until ``refresh_before`` its expiry; after
that a fetch is attempted, and if the PCCS cannot be reached the still-valid cache is used
and the fallback logged. Expired collateral is never returned.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.errors import InputError
from teaclave_ma.fsutil import atomic_write

log = logging.getLogger(__name__)

CA_TYPES = ("platform", "processor")
DEFAULT_REFRESH_BEFORE = dt.timedelta(hours=12)


class PccsError(InputError):
    """Collateral could not be obtained: the PCCS failed and no valid cache exists."""


def expiry(collateral_json: bytes) -> dt.datetime:
    """The earliest nextUpdate among the pieces of a collateral."""
    collateral = Collateral.from_json(collateral_json)
    moments = [collateral.tcb_info.next_update, collateral.qe_identity.next_update]
    moments += [
        crl.next_update_utc
        for crl in (collateral.root_ca_crl, collateral.pck_crl)
        if crl.next_update_utc
    ]
    return min(moments)


def _signed_member(text: str, key: str, url: str) -> tuple[str, str]:
    """The exact text of ``key``'s value in a PCS JSON response, and its signature."""
    document = json.loads(text)
    if (
        not isinstance(document, dict)
        or key not in document
        or not isinstance(document.get("signature"), str)
    ):
        raise PccsError(url, f"response has no {key!r} with a signature")
    decoder = json.JSONDecoder()
    start = text.index(f'"{key}"') + len(key) + 2
    start = text.index(":", start) + 1
    while text[start] in " \t\r\n":
        start += 1
    value, end = decoder.raw_decode(text, start)
    if value != document[key]:
        raise PccsError(url, f"could not isolate the signed {key!r} text")
    return text[start:end], document["signature"]


class _Pccs:
    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.base = base_url.rstrip("/")
        self.client = client

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        url = f"{self.base}{path}"
        try:
            response = self.client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            raise PccsError(url, f"HTTP {response.status_code} {response.reason_phrase}")
        return response

    @staticmethod
    def chain(response: httpx.Response, *names: str) -> str:
        for name in names:
            if name in response.headers:
                return urllib.parse.unquote(response.headers[name])
        raise PccsError(str(response.url), f"missing header {names[0]}")

    @staticmethod
    def crl_hex(response: httpx.Response) -> str:
        body = response.content
        # PCCS versions answer with DER, or with the DER as hex text; accept both.
        try:
            text = body.decode("ascii").strip()
            bytes.fromhex(text)
        except (UnicodeDecodeError, ValueError):
            return body.hex()
        return text.lower()

    def fetch(self, fmspc: bytes, ca: str) -> bytes:
        pck_crl = self.get("/pckcrl", {"ca": ca, "encoding": "der"})
        tcb = self.get("/tcb", {"fmspc": fmspc.hex().upper()})
        qe = self.get("/qe/identity")
        root_crl = self.get("/rootcacrl")
        tcb_info, tcb_signature = _signed_member(tcb.text, "tcbInfo", str(tcb.url))
        qe_identity, qe_signature = _signed_member(qe.text, "enclaveIdentity", str(qe.url))
        collateral: dict[str, Any] = {
            "pck_crl_issuer_chain": self.chain(pck_crl, "SGX-PCK-CRL-Issuer-Chain"),
            "root_ca_crl": self.crl_hex(root_crl),
            "pck_crl": self.crl_hex(pck_crl),
            "tcb_info_issuer_chain": self.chain(
                tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            "tcb_info": tcb_info,
            "tcb_info_signature": tcb_signature,
            "qe_identity_issuer_chain": self.chain(qe, "SGX-Enclave-Identity-Issuer-Chain"),
            "qe_identity": qe_identity,
            "qe_identity_signature": qe_signature,
        }
        return json.dumps(collateral, indent=1).encode()


def fetch_collateral(
    base_url: str,
    fmspc: bytes,
    ca: str,
    cache_dir: Path,
    *,
    now: dt.datetime | None = None,
    client: httpx.Client | None = None,
    ca_bundle: Path | None = None,
    refresh_before: dt.timedelta = DEFAULT_REFRESH_BEFORE,
) -> bytes:
    if ca not in CA_TYPES:
        raise PccsError("ca", f"expected one of {', '.join(CA_TYPES)}, got {ca!r}")
    now = now or dt.datetime.now(dt.UTC)
    cache = Path(cache_dir) / f"{fmspc.hex()}-{ca}.json"
    cached = cache.read_bytes() if cache.exists() else None
    cached_expiry = expiry(cached) if cached is not None else None
    if cached is not None and cached_expiry is not None and now + refresh_before < cached_expiry:
        log.debug("collateral for FMSPC %s from cache (valid until %s)", fmspc.hex(), cached_expiry)
        return cached
    own_client = client is None
    http = client or httpx.Client(timeout=30.0, verify=str(ca_bundle) if ca_bundle else True)
    try:
        fresh = _Pccs(base_url, http).fetch(fmspc, ca)
    except ConnectionError as exc:
        if cached is not None and cached_expiry is not None and now < cached_expiry:
            log.warning(
                "PCCS unreachable (%s); using cached collateral valid until %s", exc, cached_expiry
            )
            return cached
        raise PccsError(
            base_url, f"PCCS unreachable and no valid cached collateral ({exc})"
        ) from exc
    finally:
        if own_client:
            http.close()
    fresh_expiry = expiry(fresh)
    if fresh_expiry <= now:
        raise PccsError(base_url, f"the PCCS served collateral that expired at {fresh_expiry}")
    atomic_write(cache, fresh)
    return fresh
