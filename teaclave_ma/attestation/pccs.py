"""Collateral from an Intel PCS or a PCCS (API v4), cached on disk until it expires.

``base_url`` is the SGX API, e.g. ``https://pccs.example:8081/sgx/certification/v4`` (the
TDX one, ``.../tdx/certification/v4``, is accepted too and means the same service). Requests:
``/sgx/.../pckcrl?ca=platform|processor&encoding=der`` (issuer chain in
``SGX-PCK-CRL-Issuer-Chain``), ``/{sgx,tdx}/.../tcb?fmspc=HEX&update=U``
(``TCB-Info-Issuer-Chain``), ``/{sgx,tdx}/.../qe/identity?update=U``
(``SGX-Enclave-Identity-Issuer-Chain``), the TDX paths for TDX quotes, and
``/sgx/.../rootcacrl``. Intel's PCS serves no ``/rootcacrl``: when it answers 404 the root
CA CRL is fetched from the root certificate's CRL distribution point (the verifier checks
its signature by the trusted root like any other). ``update`` is ``standard`` or ``early``
(a TCB recovery's collateral before its due date); each kind is cached on its own. Issuer
chains arrive URL-encoded.
The signed ``tcbInfo`` and ``enclaveIdentity`` values are sliced out of the response text
byte for byte, never re-serialised, because their signatures cover those exact bytes; they
are found by walking the members of the top-level JSON object, so the same name inside a
string or a nested object, or unusual whitespace, cannot mislead the slicing.

The result is collateral JSON in the QuoteCollateralV3 layout, cached per FMSPC and CA.
A cached collateral is used without a request until ``refresh_before`` its expiry (the
earliest nextUpdate of its four pieces); after that a fetch is attempted, and if the PCCS is
unavailable (no connection, a timeout, an HTTP 5xx answer) the cache is used while it is
still valid, and the fallback logged. After a failure the PCCS is left alone for
``retry_after`` while the cache is valid: verification runs inside TLS handshakes, which
must not each wait for a PCCS that hangs. Once the cache is stale every call tries again,
and ``PccsUnreachable`` names the PCCS and the stale pieces. Expired collateral is never
returned.

Concurrent calls that need the same collateral share one fetch (``single_flight``): while
it runs, a caller with a still-valid cache is answered from it at once, and a caller
without one waits for the fetch's outcome, never past its deadline. Each request of the
fetch is bounded by the fetching caller's deadline too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
import httpx
from cryptography import x509

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.pck_extension import parse_pck_extension
from teaclave_ma.attestation.quote import Quote, pck_certificates
from teaclave_ma.attestation.single_flight import SingleFlight, seconds_left
from teaclave_ma.attestation.x509_load import load_pem_chain
from teaclave_ma.errors import InputError, TeaclaveMAError
from teaclave_ma.fsutil import atomic_write

log = logging.getLogger(__name__)

CA_TYPES = ("platform", "processor")
UPDATE_TYPES = ("standard", "early")
_API = "/certification/v4"
DEFAULT_REFRESH_BEFORE = dt.timedelta(hours=12)
DEFAULT_RETRY_AFTER = dt.timedelta(minutes=5)
DEFAULT_TIMEOUT = 10.0  # seconds per request
FETCH_REQUESTS = 4  # pckcrl, tcb, qe/identity, rootcacrl

_failed_at: dict[str, dt.datetime] = {}  # PCCS base URL -> when it last failed
# Fetches under way, by (PCCS base URL, cache file): the file names the FMSPC and CA type.
_fetches: SingleFlight[tuple[str, Path], bytes] = SingleFlight()
_JSON_WHITESPACE = " \t\r\n"


class PccsError(InputError):
    """Collateral could not be obtained: the PCCS failed and no valid cache exists."""


class PccsUnreachable(PccsError):
    """The PCCS is unavailable and there is no cached collateral that is still valid.

    ``url`` is the PCCS, ``reason`` why it is unavailable, ``stale`` describes each piece
    of the cached collateral past its nextUpdate (empty when nothing was cached).
    """

    def __init__(self, url: str, reason: str, cache: str, stale: tuple[str, ...]) -> None:
        self.url = url
        self.reason = reason
        self.stale = stale
        what = f"cached {cache} is stale: {'; '.join(stale)}" if stale else f"no cached {cache}"
        super().__init__(url, f"PCCS unreachable ({reason}) and {what}")


class _Unavailable(Exception):
    """The PCCS did not answer, or answered that it cannot serve now (HTTP 5xx, 408, 429)."""


class _HttpStatus(PccsError):
    """The PCCS answered with another status than 200 that is not an outage."""

    def __init__(self, url: str, response: httpx.Response) -> None:
        self.status = response.status_code
        super().__init__(url, f"HTTP {response.status_code} {response.reason_phrase}")


def next_updates(collateral_json: bytes) -> dict[str, dt.datetime]:
    """When each piece of a collateral must be replaced, by the piece's name."""
    collateral = Collateral.from_json(collateral_json)
    moments = {
        "TCB info": collateral.tcb_info.next_update,
        "QE identity": collateral.qe_identity.next_update,
    }
    for name, crl in (("root CA CRL", collateral.root_ca_crl), ("PCK CRL", collateral.pck_crl)):
        if crl.next_update_utc:
            moments[name] = crl.next_update_utc
    return moments


def expiry(collateral_json: bytes) -> dt.datetime:
    """The earliest nextUpdate among the pieces of a collateral."""
    return min(next_updates(collateral_json).values())


def _top_level_members(text: str) -> dict[str, tuple[int, int]]:
    """Each member name of a JSON object text, with the span of its value's text.

    Raises ``ValueError`` for anything but one JSON object, or a repeated member name
    (which value was signed would be ambiguous).
    """
    decoder = json.JSONDecoder()

    def skip(index: int) -> int:
        while index < len(text) and text[index] in _JSON_WHITESPACE:
            index += 1
        return index

    def expect(index: int, char: str) -> int:
        if index >= len(text) or text[index] != char:
            raise ValueError(f"expected {char!r} at offset {index}")
        return index + 1

    members: dict[str, tuple[int, int]] = {}
    index = skip(expect(skip(0), "{"))
    if index < len(text) and text[index] == "}":
        index += 1
    else:
        while True:
            if index >= len(text) or text[index] != '"':
                raise ValueError(f"expected a member name at offset {index}")
            name, index = decoder.raw_decode(text, index)
            index = skip(expect(skip(index), ":"))
            _value, end = decoder.raw_decode(text, index)
            if name in members:
                raise ValueError(f"member {name!r} appears twice")
            members[name] = (index, end)
            index = skip(end)
            if index < len(text) and text[index] == "}":
                index += 1
                break
            index = skip(expect(index, ","))
    if skip(index) != len(text):
        raise ValueError(f"unexpected text after the object at offset {index}")
    return members


def _signed_member(text: str, key: str, url: str) -> tuple[str, str]:
    """The exact text of ``key``'s value in a PCS JSON response, and its signature."""
    try:
        members = _top_level_members(text)
    except (ValueError, RecursionError) as exc:
        raise PccsError(url, f"response is not one JSON object ({exc})") from exc
    if key not in members or "signature" not in members:
        raise PccsError(url, f"response has no {key!r} with a signature")
    start, end = members[key]
    signature = json.loads(text[slice(*members["signature"])])
    if not isinstance(signature, str):
        raise PccsError(url, "the response's signature is not a string")
    return text[start:end], signature


def _api_root(base_url: str) -> str:
    """``base_url`` without its ``/sgx/certification/v4`` (or ``/tdx/...``) ending."""
    base = base_url.rstrip("/")
    for tee in ("/sgx", "/tdx"):
        if base.endswith(tee + _API):
            return base.removesuffix(tee + _API)
    raise PccsError(
        "base_url", f"expected a PCCS URL ending in /sgx{_API} or /tdx{_API}, got {base_url!r}"
    )


def _crl_distribution_point(chain_pem: str, url: str) -> str:
    """The first http(s) CRL distribution point of the root (last) certificate of a chain."""
    root = load_pem_chain(chain_pem.encode(), url, PccsError)[-1]
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        points = x509.CRLDistributionPoints([])
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                ("https://", "http://")
            ):
                return name.value
    raise PccsError(
        url, "no /rootcacrl here, and the root certificate names no CRL distribution point"
    )


class _Pccs:
    def __init__(self, base_url: str, client: httpx.Client) -> None:
        self.root = _api_root(base_url)
        self.client = client

    def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        # The client's own timeout, or less if the caller's deadline comes sooner.
        timeout = seconds_left(self.client.timeout.read or DEFAULT_TIMEOUT)
        if timeout <= 0:
            raise _Unavailable(f"{url}: not requested, the caller's deadline has passed")
        try:
            response = self.client.get(url, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _Unavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        # 5xx, and "too many requests" / "request timeout": the PCCS cannot serve now.
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Unavailable(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
        if response.status_code != 200:
            raise _HttpStatus(url, response)
        return response

    def api(self, tee: str, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.get(f"{self.root}/{tee.lower()}{_API}{path}", params)

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

    def root_ca_crl(self, root_chain: str) -> httpx.Response:
        url = f"{self.root}/sgx{_API}/rootcacrl"
        try:
            return self.get(url)
        except _HttpStatus as exc:
            if exc.status != 404:
                raise
        # Intel's PCS itself: the CRL is where the root certificate says it is.
        return self.get(_crl_distribution_point(root_chain, url))

    def fetch(self, fmspc: bytes, ca: str, tee: str, update: str) -> bytes:
        pck_crl = self.api("SGX", "/pckcrl", {"ca": ca, "encoding": "der"})
        tcb = self.api(tee, "/tcb", {"fmspc": fmspc.hex().upper(), "update": update})
        qe = self.api(tee, "/qe/identity", {"update": update})
        pck_crl_chain = self.chain(pck_crl, "SGX-PCK-CRL-Issuer-Chain")
        root_crl = self.root_ca_crl(pck_crl_chain)
        tcb_info, tcb_signature = _signed_member(tcb.text, "tcbInfo", str(tcb.url))
        qe_identity, qe_signature = _signed_member(qe.text, "enclaveIdentity", str(qe.url))
        collateral: dict[str, Any] = {
            "pck_crl_issuer_chain": pck_crl_chain,
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


@attrs.frozen
class _Cached:
    data: bytes
    next_updates: dict[str, dt.datetime]  # of each piece

    @property
    def until(self) -> dt.datetime:
        return min(self.next_updates.values())


def _read_cache(cache: Path) -> _Cached | None:
    """The cached collateral and its pieces' nextUpdate; None if absent or unreadable."""
    try:
        cached = cache.read_bytes()
        return _Cached(cached, next_updates(cached))
    except FileNotFoundError:
        return None
    except (OSError, TeaclaveMAError) as exc:
        # A damaged cache is only a missed optimisation: fetch again, never trust it.
        log.warning("ignoring unreadable collateral cache %s: %s", cache, exc)
        return None


def fetch_collateral_for(quote: Quote, base_url: str, cache_dir: Path, **options: Any) -> bytes:
    """``fetch_collateral`` for the platform, the PCK CA and the TEE of ``quote``."""
    chain = pck_certificates(quote.certification.pck_chain_pem)
    ca = "processor" if "Processor" in chain[1].subject.rfc4514_string() else "platform"
    fmspc = parse_pck_extension(chain[0]).fmspc
    return fetch_collateral(base_url, fmspc, ca, cache_dir, tee=quote.tee, **options)


def fetch_collateral(
    base_url: str,
    fmspc: bytes,
    ca: str,
    cache_dir: Path,
    *,
    tee: str = "SGX",
    update: str = "standard",
    now: dt.datetime | None = None,
    client: httpx.Client | None = None,
    ca_bundle: Path | None = None,
    refresh_before: dt.timedelta = DEFAULT_REFRESH_BEFORE,
    retry_after: dt.timedelta = DEFAULT_RETRY_AFTER,
) -> bytes:
    if ca not in CA_TYPES:
        raise PccsError("ca", f"expected one of {', '.join(CA_TYPES)}, got {ca!r}")
    if tee not in ("SGX", "TDX"):
        raise PccsError("tee", f"expected SGX or TDX, got {tee!r}")
    if update not in UPDATE_TYPES:
        raise PccsError("update", f"expected one of {', '.join(UPDATE_TYPES)}, got {update!r}")
    at = now or dt.datetime.now(dt.UTC)
    # One file per kind of collateral; SGX standard keeps the name it always had. The file
    # also keys the single flight, so concurrent misses of one kind share one fetch.
    kind = ("-tdx" if tee == "TDX" else "") + ("-early" if update == "early" else "")
    cache = Path(cache_dir) / f"{fmspc.hex()}-{ca}{kind}.json"
    what = f"{'TDX ' if tee == 'TDX' else ''}collateral for FMSPC {fmspc.hex()} ({ca} CA)"

    def fetch() -> bytes:
        """Fetch and cache fresh collateral; if that fails, the still-valid cache or an error."""
        # Read again: a fetch that ended since this caller looked may have just filled it.
        cached, answer = _from_cache(cache, base_url, at, refresh_before, retry_after)
        if answer is not None:
            return answer
        valid = cached if cached is not None and at < cached.until else None
        own_client = client is None
        http = client or httpx.Client(
            timeout=DEFAULT_TIMEOUT, verify=str(ca_bundle) if ca_bundle else True
        )
        try:
            fresh = _Pccs(base_url, http).fetch(fmspc, ca, tee, update)
            fresh_expiry = expiry(fresh)
            if fresh_expiry <= at:
                raise PccsError(
                    base_url, f"the PCCS served collateral that expired at {fresh_expiry}"
                )
        except (_Unavailable, TeaclaveMAError) as exc:
            # Whatever went wrong (an outage, a 4xx from a proxy, a malformed or stale answer),
            # collateral that is still valid serves until a retry: refusing every handshake
            # for hours because a refresh failed would protect nothing.
            _failed_at[base_url] = at
            if valid is not None:
                log.warning(
                    "refreshing collateral from PCCS %s failed (%s); using cached collateral "
                    "valid until %s",
                    base_url,
                    exc,
                    valid.until,
                )
                return valid.data
            if not isinstance(exc, _Unavailable):
                raise
            pieces = cached.next_updates if cached is not None else {}
            stale = tuple(
                f"{piece} nextUpdate {moment:%Y-%m-%dT%H:%M:%SZ}"
                for piece, moment in sorted(pieces.items(), key=lambda item: item[1])
                if moment <= at
            )
            raise PccsUnreachable(base_url, str(exc), what, stale) from exc
        finally:
            if own_client:
                http.close()
        _failed_at.pop(base_url, None)
        atomic_write(cache, fresh)
        return fresh

    cached, answer = _from_cache(cache, base_url, at, refresh_before, retry_after)
    if answer is not None:
        return answer
    key = (base_url, cache)
    if cached is not None and at < cached.until and _fetches.in_flight(key):
        log.debug("%s is being refreshed; the cache serves meanwhile", what)
        return cached.data
    wait = seconds_left(FETCH_REQUESTS * DEFAULT_TIMEOUT)
    try:
        return _fetches.run(key, fetch, wait=wait)
    except TimeoutError as exc:
        raise PccsUnreachable(
            base_url, f"another caller's fetch did not end within {wait:.1f} s", what, ()
        ) from exc


def _from_cache(
    cache: Path,
    base_url: str,
    now: dt.datetime,
    refresh_before: dt.timedelta,
    retry_after: dt.timedelta,
) -> tuple[_Cached | None, bytes | None]:
    """The cache, and what to answer without a request, if anything: the cache while it is
    not yet due for a refresh, or while the PCCS is left alone after a failure."""
    cached = _read_cache(cache)
    valid = cached if cached is not None and now < cached.until else None
    if valid is not None and now + refresh_before < valid.until:
        log.debug("%s from cache (valid until %s)", cache.name, valid.until)
        return cached, valid.data
    failed_at = _failed_at.get(base_url)
    if valid is not None and failed_at is not None and failed_at <= now < failed_at + retry_after:
        log.debug("PCCS %s failed at %s; cached collateral used until a retry", base_url, failed_at)
        return cached, valid.data
    return cached, None
