"""Intel DCAP ECDSA quotes, v3 (SGX) and v4 (SGX and TDX), parsed from Intel's byte layout.

Every read goes through ``_Reader``, which checks the length first and names the field and
offset of anything missing, so malformed input raises ``QuoteFormatError`` and nothing else.
Both versions are normalised into one model: in v4 the QE report and the PCK chain are
wrapped in a certification data block of type 6, in v3 they follow the signature directly.
"""

from __future__ import annotations

import struct

import attrs
from cryptography import x509

from teaclave_ma.attestation.errors import QuoteFormatError
from teaclave_ma.attestation.x509_load import load_pem_chain
from teaclave_ma.identity import SgxIdentity, TdxIdentity

TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATTESTATION_KEY_ECDSA_P256 = 2
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6
SGX_REPORT_SIZE = 384
TD_REPORT_SIZE = 584
SGX_FLAGS_DEBUG = 0x02
TD_ATTRIBUTES_DEBUG = 0x01
MAX_CERT_DATA = 64 * 1024
V5_BODY_SIZES = {1: SGX_REPORT_SIZE, 2: TD_REPORT_SIZE, 3: TD_REPORT_SIZE + 16 + 48}


class _Reader:
    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.base = base

    def take(self, size: int, field: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            left = len(self.data) - self.pos
            raise QuoteFormatError(
                field, f"needs {size} bytes at offset {self.base + self.pos}, only {left} left"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u16(self, field: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field))[0]
        return value

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def expect_end(self, field: str) -> None:
        if self.pos != len(self.data):
            raise QuoteFormatError(
                field,
                f"{len(self.data) - self.pos} unexpected trailing bytes at offset {self.offset}",
            )


@attrs.frozen
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    raw: bytes


@attrs.frozen
class SgxReportBody:
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes
    raw: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & SGX_FLAGS_DEBUG)

    def identity(self) -> SgxIdentity:
        return SgxIdentity(
            mr_enclave=self.mr_enclave,
            mr_signer=self.mr_signer,
            isv_prod_id=self.isv_prod_id,
            isv_svn=self.isv_svn,
            debug=self.debug,
            config_svn=self.config_svn,
        )


@attrs.frozen
class TdReportBody:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    raw: bytes
    # TD 1.5 bodies (v5 quotes, body type 3) only:
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    def identity(self) -> TdxIdentity:
        return TdxIdentity(
            mr_td=self.mr_td,
            rtmr0=self.rtmr0,
            rtmr1=self.rtmr1,
            rtmr2=self.rtmr2,
            rtmr3=self.rtmr3,
            td_attributes=self.td_attributes,
            xfam=self.xfam,
        )


@attrs.frozen
class QeReportCertification:
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data_type: int
    pck_chain_pem: bytes


@attrs.frozen
class Quote:
    header: QuoteHeader
    body: SgxReportBody | TdReportBody
    signed_bytes: bytes
    quote_signature: bytes
    attestation_key: bytes
    certification: QeReportCertification
    raw: bytes

    @property
    def tee(self) -> str:
        return "TDX" if isinstance(self.body, TdReportBody) else "SGX"

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    def describe(self) -> dict[str, object]:
        """The identity under the JSON names every command uses (quote show/verify, cert inspect)."""
        body = self.body
        if isinstance(body, TdReportBody):
            return {
                "version": self.header.version,
                "tee": "TDX",
                "mr_td": body.mr_td.hex(),
                "rtmr0": body.rtmr0.hex(),
                "rtmr1": body.rtmr1.hex(),
                "rtmr2": body.rtmr2.hex(),
                "rtmr3": body.rtmr3.hex(),
                "mr_seam": body.mr_seam.hex(),
                "td_attributes": body.td_attributes.hex(),
                "xfam": body.xfam.hex(),
                "debug": body.debug,
                "report_data": body.report_data.hex(),
            }
        return {
            "version": self.header.version,
            "tee": "SGX",
            "mr_enclave": body.mr_enclave.hex(),
            "mr_signer": body.mr_signer.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "config_svn": body.config_svn,
            "debug": body.debug,
            "cpu_svn": body.cpu_svn.hex(),
            "report_data": body.report_data.hex(),
        }


def _parse_header(reader: _Reader) -> QuoteHeader:
    start = reader.pos
    version = reader.u16("header.version")
    key_type = reader.u16("header.attestation_key_type")
    tee_type = reader.u32("header.tee_type")
    qe_svn = reader.u16("header.qe_svn")
    pce_svn = reader.u16("header.pce_svn")
    vendor = reader.take(16, "header.qe_vendor_id")
    user_data = reader.take(20, "header.user_data")
    if version not in (3, 4, 5):
        raise QuoteFormatError(
            "header.version",
            f"unsupported quote version {version} at offset 0 (supported: 3, 4, 5)",
        )
    if key_type != ATTESTATION_KEY_ECDSA_P256:
        raise QuoteFormatError(
            "header.attestation_key_type",
            f"unsupported attestation key type {key_type} at offset 2 (supported: 2, ECDSA-P256)",
        )
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX) or (version == 3 and tee_type != TEE_TYPE_SGX):
        raise QuoteFormatError(
            "header.tee_type",
            f"unsupported TEE type 0x{tee_type:08x} for a v{version} quote at offset 4",
        )
    return QuoteHeader(
        version,
        key_type,
        tee_type,
        qe_svn,
        pce_svn,
        vendor,
        user_data,
        reader.data[start : reader.pos],
    )


# Fixed layouts, read in one call each: a report body is only ever handed over as a slice
# of exactly its size (``_Reader.take`` names any shortfall), so the sizes are checked once.
_SGX_REPORT_BODY = struct.Struct(
    "<16s I 12x 16s 16s 32s 32x 32s 32x 64s H H H 42x 16s 64s"
)  # cpu_svn .. report_data; x: reserved
_TD_REPORT_FIELDS = (
    "tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam",
    "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
    "report_data",
)  # fmt: skip
_TD_REPORT_BODY = struct.Struct("<16s 48s 48s 8s 8s 8s 48s 48s 48s 48s 48s 48s 48s 48s 64s")
_TD15_EXTRA = struct.Struct("<16s 48s")  # tee_tcb_svn2, mr_service_td


def _expect_size(raw: bytes, size: int, field: str, base: int) -> None:
    if len(raw) != size:
        raise QuoteFormatError(field, f"is {size} bytes, got {len(raw)} at offset {base}")


def parse_sgx_report_body(raw: bytes, field: str = "report_body", base: int = 0) -> SgxReportBody:
    _expect_size(raw, SGX_REPORT_SIZE, field, base)
    (
        cpu_svn, misc_select, isv_ext_prod_id, attributes, mr_enclave, mr_signer, config_id,
        isv_prod_id, isv_svn, config_svn, isv_family_id, report_data,
    ) = _SGX_REPORT_BODY.unpack(raw)  # fmt: skip
    return SgxReportBody(
        cpu_svn, misc_select, isv_ext_prod_id, attributes, mr_enclave, mr_signer, config_id,
        isv_prod_id, isv_svn, config_svn, isv_family_id, report_data, raw,
    )  # fmt: skip


def _parse_td_report_body(raw: bytes, base: int, *, td15: bool = False) -> TdReportBody:
    extra = _TD15_EXTRA.size if td15 else 0
    _expect_size(raw, TD_REPORT_SIZE + extra, "td_report_body", base)
    fields = dict(zip(_TD_REPORT_FIELDS, _TD_REPORT_BODY.unpack_from(raw), strict=True))
    if td15:
        tee_tcb_svn2, mr_service_td = _TD15_EXTRA.unpack_from(raw, TD_REPORT_SIZE)
        return TdReportBody(
            **fields, raw=raw, tee_tcb_svn2=tee_tcb_svn2, mr_service_td=mr_service_td
        )
    return TdReportBody(**fields, raw=raw)


def _parse_body(reader: _Reader, header: QuoteHeader) -> SgxReportBody | TdReportBody:
    offset = reader.offset
    if header.tee_type == TEE_TYPE_TDX:
        return _parse_td_report_body(reader.take(TD_REPORT_SIZE, "td_report_body"), offset)
    return parse_sgx_report_body(reader.take(SGX_REPORT_SIZE, "report_body"), "report_body", offset)


def _parse_v5_body(reader: _Reader, header: QuoteHeader) -> SgxReportBody | TdReportBody:
    """v5 puts a descriptor (u16 type, u32 size) before the body: 1 SGX, 2 TD 1.0, 3 TD 1.5."""
    body_type = reader.u16("body.type")
    size = reader.u32("body.size")
    expected = V5_BODY_SIZES.get(body_type)
    if expected is None:
        raise QuoteFormatError(
            "body.type", f"unknown v5 body type {body_type} at offset 48 (known: 1, 2, 3)"
        )
    if (body_type == 1) != (header.tee_type == TEE_TYPE_SGX):
        raise QuoteFormatError(
            "body.type", f"body type {body_type} does not fit TEE type 0x{header.tee_type:08x}"
        )
    if size != expected:
        raise QuoteFormatError(
            "body.size", f"body type {body_type} is {expected} bytes, the quote says {size}"
        )
    offset = reader.offset
    raw = reader.take(size, "body")
    if body_type == 1:
        return parse_sgx_report_body(raw, "report_body", offset)
    return _parse_td_report_body(raw, offset, td15=body_type == 3)


def _parse_qe_certification(reader: _Reader, field: str) -> QeReportCertification:
    report_offset = reader.offset
    qe_report = parse_sgx_report_body(
        reader.take(SGX_REPORT_SIZE, f"{field}.qe_report"), f"{field}.qe_report", report_offset
    )
    qe_signature = reader.take(64, f"{field}.qe_report_signature")
    auth_size = reader.u16(f"{field}.qe_auth_data_size")
    auth_data = reader.take(auth_size, f"{field}.qe_auth_data")
    cert_type = reader.u16(f"{field}.certification_data_type")
    cert_size = reader.u32(f"{field}.certification_data_size")
    if cert_type != CERT_DATA_PCK_CHAIN:
        raise QuoteFormatError(
            f"{field}.certification_data_type",
            f"unsupported certification data type {cert_type} at offset {reader.offset - 6} (supported: 5, PCK certificate chain)",
        )
    if cert_size > MAX_CERT_DATA:
        raise QuoteFormatError(
            f"{field}.certification_data_size",
            f"{cert_size} bytes exceeds the limit of {MAX_CERT_DATA}",
        )
    chain = reader.take(cert_size, f"{field}.certification_data")
    return QeReportCertification(qe_report, qe_signature, auth_data, cert_type, chain)


def parse_quote(data: bytes) -> Quote:
    """Parse a raw quote; any malformation raises ``QuoteFormatError`` naming field and offset."""
    data = bytes(data)
    reader = _Reader(data)
    header = _parse_header(reader)
    body = _parse_v5_body(reader, header) if header.version == 5 else _parse_body(reader, header)
    signed_end = reader.pos
    signature_size = reader.u32("signature_data_length")
    sig = _Reader(reader.take(signature_size, "signature_data"), reader.offset)
    # Quotes read from fixed-size buffers (TDX, configfs-tsm) arrive zero-padded; padding
    # is tolerated, any other trailing byte is not.
    if any(data[reader.pos :]):
        raise QuoteFormatError(
            "signature_data_length",
            f"{len(data) - reader.pos} trailing bytes after the signature data at offset {reader.offset} are not zero padding",
        )
    quote_signature = sig.take(64, "signature_data.quote_signature")
    attestation_key = sig.take(64, "signature_data.attestation_key")
    if header.version == 3:
        certification = _parse_qe_certification(sig, "signature_data")
    else:
        outer_type = sig.u16("signature_data.certification_data_type")
        outer_size = sig.u32("signature_data.certification_data_size")
        if outer_type != CERT_DATA_QE_REPORT:
            raise QuoteFormatError(
                "signature_data.certification_data_type",
                f"v4 quotes carry type 6 (QE report certification data), got {outer_type} at offset {sig.offset - 6}",
            )
        inner = _Reader(
            sig.take(outer_size, "signature_data.certification_data"), sig.offset - outer_size
        )
        certification = _parse_qe_certification(inner, "qe_report_certification_data")
        inner.expect_end("qe_report_certification_data")
    sig.expect_end("signature_data")
    return Quote(
        header=header,
        body=body,
        signed_bytes=data[:signed_end],
        quote_signature=quote_signature,
        attestation_key=attestation_key,
        certification=certification,
        raw=data,
    )


def pck_certificates(pem: bytes) -> list[x509.Certificate]:
    """The PCK chain carried in a quote, leaf first."""
    # Intel's quoting library appends a NUL terminator to the PEM text.
    certificates = load_pem_chain(pem.rstrip(b"\0"), "certification_data", QuoteFormatError)
    if len(certificates) < 2:
        raise QuoteFormatError(
            "certification_data", f"expected a PCK chain of 3 certificates, got {len(certificates)}"
        )
    return certificates
