"""The simulated Intel PKI: root CA, PCK platform CA, PCK certificate with the SGX
extension, TCB signing certificate, and the two CRLs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teaclave_ma.attestation.pck_extension import SGX_EXTENSION_OID
from teaclave_ma.formats import der

ROOT_CN = "teaclave-ma SIMULATED SGX Root CA"
PLATFORM_CA_CN = "teaclave-ma SIMULATED SGX PCK Platform CA"
TCB_SIGNING_CN = "teaclave-ma SIMULATED SGX TCB Signing"
PCK_CN = "teaclave-ma SIMULATED SGX PCK Certificate"


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "teaclave-ma simulation (not Intel)"),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.subject if issuer else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )  # fmt: skip
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def sgx_extension(
    *,
    ppid: bytes,
    components: Sequence[int],
    pce_svn: int,
    cpu_svn: bytes,
    pce_id: bytes,
    fmspc: bytes,
) -> x509.UnrecognizedExtension:
    """The Intel SGX extension, laid out as Intel's PCK certificates carry it."""

    def entry(oid: str, value: bytes) -> bytes:
        return der.encode_sequence(der.encode_oid(oid), value)

    tcb = [
        entry(f"{SGX_EXTENSION_OID}.2.{i + 1}", der.encode_int(svn))
        for i, svn in enumerate(components)
    ]
    tcb.append(entry(f"{SGX_EXTENSION_OID}.2.17", der.encode_int(pce_svn)))
    tcb.append(entry(f"{SGX_EXTENSION_OID}.2.18", der.encode_tlv(der.TAG_OCTET_STRING, cpu_svn)))
    value = der.encode_sequence(
        entry(f"{SGX_EXTENSION_OID}.1", der.encode_tlv(der.TAG_OCTET_STRING, ppid)),
        entry(f"{SGX_EXTENSION_OID}.2", der.encode_sequence(*tcb)),
        entry(f"{SGX_EXTENSION_OID}.3", der.encode_tlv(der.TAG_OCTET_STRING, pce_id)),
        entry(f"{SGX_EXTENSION_OID}.4", der.encode_tlv(der.TAG_OCTET_STRING, fmspc)),
        entry(f"{SGX_EXTENSION_OID}.5", der.encode_tlv(der.TAG_ENUMERATED, b"\x00")),
    )
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), value)


def crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked_serials: Sequence[int],
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    return builder.sign(issuer_key, hashes.SHA256())
