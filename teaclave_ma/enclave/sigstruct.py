"""A SIGSTRUCT-like record: the author's RSA-3072 signature over the enclave's measurement
and attributes, carrying the modulus from which MRSIGNER is computed.

Signed bytes::

    b"teaclave-ma sigstruct v1\\0" || mr_enclave (32) || u16le isv_prod_id || u16le isv_svn
    || u16le config_svn || u8 debug || date (8 ASCII digits, YYYYMMDD)

signed with RSASSA-PKCS1-v1_5 over SHA-256, as SGX's SIGSTRUCT uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from teaclave_ma.crypto.author_key import MODULUS_BYTES, PUBLIC_EXPONENT, modulus_le
from teaclave_ma.enclave.errors import ImageError, ImageFormatError
from teaclave_ma.errors import InputError
from teaclave_ma.formats.service_config import EnclaveConfig, parse_enclave_config

FORMAT = "teaclave-ma sigstruct v1"
SIGSTRUCT_FILE = "sigstruct.json"


@attrs.frozen
class SigStruct:
    mr_enclave: bytes
    enclave: EnclaveConfig
    date: str
    modulus_le: bytes
    signature: bytes

    @property
    def mr_signer(self) -> bytes:
        return hashlib.sha256(self.modulus_le).digest()

    def public_key(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(
            PUBLIC_EXPONENT, int.from_bytes(self.modulus_le, "little")
        ).public_key()

    def verify(self) -> None:
        try:
            self.public_key().verify(
                self.signature,
                signed_bytes(self.mr_enclave, self.enclave, self.date),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError) as exc:
            raise ImageError(
                "sigstruct_signature", "the SIGSTRUCT signature does not verify under its modulus"
            ) from exc

    def to_bytes(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "mr_enclave": self.mr_enclave.hex(),
                    "isv_prod_id": self.enclave.isv_prod_id,
                    "isv_svn": self.enclave.isv_svn,
                    "config_svn": self.enclave.config_svn,
                    "debug": self.enclave.debug,
                    "date": self.date,
                    "modulus_le": self.modulus_le.hex(),
                    "exponent": PUBLIC_EXPONENT,
                    "signature": self.signature.hex(),
                },
                indent=1,
            ).encode()
            + b"\n"
        )


def signed_bytes(mr_enclave: bytes, enclave: EnclaveConfig, date: str) -> bytes:
    return (
        FORMAT.encode()
        + b"\0"
        + mr_enclave
        + struct.pack(
            "<HHHB", enclave.isv_prod_id, enclave.isv_svn, enclave.config_svn, int(enclave.debug)
        )
        + date.encode()
    )


def sign(
    key: rsa.RSAPrivateKey, mr_enclave: bytes, enclave: EnclaveConfig, now: dt.datetime
) -> SigStruct:
    date = now.strftime("%Y%m%d")
    signature = key.sign(
        signed_bytes(mr_enclave, enclave, date), padding.PKCS1v15(), hashes.SHA256()
    )
    return SigStruct(mr_enclave, enclave, date, modulus_le(key.public_key()), signature)


def parse_sigstruct(data: bytes, what: str = "sigstruct.json") -> SigStruct:
    try:
        document = json.loads(data)
        if document["format"] != FORMAT:
            raise ImageFormatError(what, f"unknown format {document['format']!r}")
        if document["exponent"] != PUBLIC_EXPONENT:
            raise ImageFormatError(what, f"exponent must be {PUBLIC_EXPONENT}")
        modulus = bytes.fromhex(document["modulus_le"])
        mr_enclave = bytes.fromhex(document["mr_enclave"])
        date = str(document["date"])
        fields = {key: document[key] for key in ("isv_prod_id", "isv_svn", "config_svn", "debug")}
        signature = bytes.fromhex(document["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageFormatError(what, f"malformed SIGSTRUCT record ({exc!r})") from exc
    try:
        # The same types and u16 ranges as service.yaml; out of range would break signed_bytes.
        enclave = parse_enclave_config(fields, what)
    except InputError as exc:
        raise ImageFormatError(exc.field, exc.problem) from exc
    if (
        len(modulus) != MODULUS_BYTES
        or len(mr_enclave) != 32
        or len(date) != 8
        or not date.isdigit()
    ):
        raise ImageFormatError(what, "field sizes do not match an RSA-3072 SIGSTRUCT")
    return SigStruct(mr_enclave, enclave, date, modulus, signature)
