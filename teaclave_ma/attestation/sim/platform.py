"""``SimulatedPlatform``: one simulated machine with SGX and TDX, its two quoting enclaves
(the SGX QE for enclaves, the TD QE for TDX guests) and the collateral for both."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from teaclave_ma.attestation.collateral import Collateral
from teaclave_ma.attestation.errors import CollateralError
from teaclave_ma.attestation.quote import Quote
from teaclave_ma.attestation.sim import pki, quoting
from teaclave_ma.attestation.sim.collateral import QE_ISV_SVN, qe_identity_json, tcb_info_json
from teaclave_ma.attestation.sim.signing import raw_public_key, sign_raw
from teaclave_ma.attestation.x509_load import load_pem_chain
from teaclave_ma.errors import InputError
from teaclave_ma.fsutil import atomic_write
from teaclave_ma.identity import SgxIdentity, TdxIdentity

log = logging.getLogger(__name__)

STATE_FILE = "platform.json"
WARNING_FILE = "SIMULATED-PLATFORM.txt"
FORMAT = "teaclave-ma simulated SGX platform v2"
PLATFORM_COMPONENTS = (5, 5, 3, 3, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
PLATFORM_PCE_SVN = 13
# TEE_TCB_SVN of the TDX module; byte 1 = 0 means a TDX 1.0 module (no module identity check)
TDX_COMPONENTS = (5, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
QE_PROD_ID = {"SGX": 1, "TDX": 2}
SEALING_KEY_SIZE = 16  # EGETKEY's keys are 128-bit


class SimulatedPlatformError(InputError):
    """A simulated platform directory that cannot be loaded."""


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_cert(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _warn(where: str) -> None:
    log.warning(
        "SIMULATED SGX platform %s: its quotes are produced in software and prove nothing "
        "about real hardware; for development and tests only",
        where,
    )


@attrs.frozen
class QuotingEnclave:
    """A QE's report (signed by the PCK key) certifying its attestation key."""

    report: bytes
    report_signature: bytes
    auth_data: bytes

    def to_state(self) -> dict[str, str]:
        return {
            "report": self.report.hex(),
            "signature": self.report_signature.hex(),
            "auth_data": self.auth_data.hex(),
        }

    @classmethod
    def from_state(cls, state: dict[str, str]) -> QuotingEnclave:
        return cls(
            bytes.fromhex(state["report"]),
            bytes.fromhex(state["signature"]),
            bytes.fromhex(state["auth_data"]),
        )


ATTESTATION_KEY = {"SGX": "attestation", "TDX": "td_attestation"}


@attrs.define
class SimulatedPlatform:
    """All keys of one simulated machine; ``save`` writes them, ``load`` reads them back."""

    keys: dict[str, ec.EllipticCurvePrivateKey]
    certs: dict[str, x509.Certificate]
    settings: dict[str, Any]
    quoting_enclaves: dict[str, QuotingEnclave]
    collateral: dict[str, dict[str, str]] = attrs.field(factory=dict)  # by TEE: SGX, TDX
    # What EGETKEY derives sealing keys from on this machine (the CPU's fused secret).
    sealing_secret: bytes = attrs.field(factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def root_certificate_der(self) -> bytes:
        return self.certs["root"].public_bytes(serialization.Encoding.DER)

    @property
    def pck_chain_pem(self) -> bytes:
        return "".join(_pem_cert(self.certs[n]) for n in ("pck", "platform_ca", "root")).encode()

    @classmethod
    def create(
        cls,
        *,
        now: dt.datetime | None = None,
        tcb_status: str = "UpToDate",
        validity: dt.timedelta = dt.timedelta(days=30),
    ) -> SimulatedPlatform:
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        start, end = now - dt.timedelta(hours=1), now + validity
        names = ("root", "platform_ca", "tcb_signing", "pck", "attestation", "td_attestation")
        keys = {name: pki.new_key() for name in names}
        # Certificates outlive the collateral, as Intel's do, so that collateral expiry is
        # what tests of "expired" exercise.
        certificates_until = end + dt.timedelta(days=365)
        certs: dict[str, x509.Certificate] = {}

        def issue(name: str, subject: str, issuer: str, *, ca: bool, **extra: Any) -> None:
            certs[name] = pki.issue(
                subject, keys[name], certs.get(issuer), keys[issuer],
                ca=ca, not_before=start, not_after=certificates_until, **extra,
            )  # fmt: skip

        issue("root", pki.ROOT_CN, "root", ca=True)
        issue("platform_ca", pki.PLATFORM_CA_CN, "root", ca=True)
        issue("tcb_signing", pki.TCB_SIGNING_CN, "root", ca=False)
        fmspc = secrets.token_bytes(6)
        extension = pki.sgx_extension(
            ppid=secrets.token_bytes(16), components=PLATFORM_COMPONENTS, pce_svn=PLATFORM_PCE_SVN,
            cpu_svn=bytes(PLATFORM_COMPONENTS), pce_id=b"\x00\x00", fmspc=fmspc,
        )  # fmt: skip
        issue("pck", pki.PCK_CN, "platform_ca", ca=False, extensions=[extension])
        settings: dict[str, Any] = {
            "format": FORMAT,
            "created": now.isoformat(),
            "not_before": start.isoformat(),
            "not_after": end.isoformat(),
            "tcb_status": tcb_status,
            "fmspc": fmspc.hex(),
            "qe_mr_signer": {tee: secrets.token_bytes(32).hex() for tee in ("SGX", "TDX")},
            "mr_seam": secrets.token_bytes(48).hex(),
            "revoked_pck": False,
        }
        quoting_enclaves = {tee: _quoting_enclave(keys, tee, settings) for tee in ("SGX", "TDX")}
        platform = cls(keys=keys, certs=certs, settings=settings, quoting_enclaves=quoting_enclaves)
        platform._issue_collateral()
        _warn("created")
        return platform

    def _issue_collateral(self) -> None:
        start = dt.datetime.fromisoformat(self.settings["not_before"])
        end = dt.datetime.fromisoformat(self.settings["not_after"])
        revoked = [self.certs["pck"].serial_number] if self.settings["revoked_pck"] else []
        root_crl = pki.crl(
            self.certs["root"], self.keys["root"], [], this_update=start, next_update=end
        )
        pck_crl = pki.crl(
            self.certs["platform_ca"],
            self.keys["platform_ca"],
            revoked,
            this_update=start,
            next_update=end,
        )
        signing_chain = _pem_cert(self.certs["tcb_signing"]) + _pem_cert(self.certs["root"])
        for tee in ("SGX", "TDX"):
            tcb_info = tcb_info_json(
                fmspc=bytes.fromhex(self.settings["fmspc"]), components=PLATFORM_COMPONENTS,
                pce_svn=PLATFORM_PCE_SVN, status=self.settings["tcb_status"], issued=start, next_update=end,
                tdx_components=TDX_COMPONENTS if tee == "TDX" else None,
            )  # fmt: skip
            qe_identity = qe_identity_json(
                mrsigner=bytes.fromhex(self.settings["qe_mr_signer"][tee]),
                isvprodid=QE_PROD_ID[tee], issued=start, next_update=end, td=tee == "TDX",
            )  # fmt: skip
            self.collateral[tee] = {
                "pck_crl_issuer_chain": _pem_cert(self.certs["platform_ca"])
                + _pem_cert(self.certs["root"]),
                "root_ca_crl": root_crl.public_bytes(serialization.Encoding.DER).hex(),
                "pck_crl": pck_crl.public_bytes(serialization.Encoding.DER).hex(),
                "tcb_info_issuer_chain": signing_chain,
                "tcb_info": tcb_info.decode(),
                "tcb_info_signature": sign_raw(self.keys["tcb_signing"], tcb_info).hex(),
                "qe_identity_issuer_chain": signing_chain,
                "qe_identity": qe_identity.decode(),
                "qe_identity_signature": sign_raw(self.keys["tcb_signing"], qe_identity).hex(),
            }

    def collateral_json(self, tee: str = "SGX") -> bytes:
        """The collateral for this platform's SGX or TDX quotes, in dcap-qvl's
        QuoteCollateralV3 JSON layout."""
        return json.dumps(self.collateral[tee], indent=1).encode()

    def collateral_for(self) -> Callable[[Quote], Collateral]:
        """Collateral for any quote of this platform: it certifies every local enclave and
        TD, so one collateral set per TEE, parsed once."""
        collaterals = {
            tee: Collateral.from_json(self.collateral_json(tee)) for tee in ("SGX", "TDX")
        }
        return lambda quote: collaterals[quote.tee]

    def revoke_pck(self) -> None:
        """Reissue the PCK CRL with this platform's PCK certificate on it."""
        self.settings["revoked_pck"] = True
        self._issue_collateral()

    def quote(self, identity: SgxIdentity, report_data: bytes) -> bytes:
        """A v3 quote for an enclave with ``identity`` and ``report_data`` (64 bytes)."""
        flags = quoting.SGX_FLAGS_INIT | quoting.SGX_FLAGS_MODE64BIT
        if identity.debug:
            flags |= quoting.SGX_FLAGS_DEBUG
        body = quoting.report_body(
            cpu_svn=bytes(PLATFORM_COMPONENTS),
            attributes=quoting.attributes(flags),
            mr_enclave=identity.mr_enclave,
            mr_signer=identity.mr_signer,
            isv_prod_id=identity.isv_prod_id,
            isv_svn=identity.isv_svn,
            config_svn=identity.config_svn,
            report_data=report_data,
        )
        return self._sign("SGX", quoting.header(qe_svn=QE_ISV_SVN, pce_svn=PLATFORM_PCE_SVN) + body)

    def td_quote(
        self, identity: TdxIdentity, report_data: bytes, *, v5: bool = False, **td_fields: bytes
    ) -> bytes:
        """A TDX quote for a TD with ``identity`` and ``report_data`` (64 bytes): v4 with a
        TD 1.0 body, or ``v5`` with a TD 1.5 body; ``td_fields`` replace the module's
        (tee_tcb_svn, tee_tcb_svn2, mr_signer_seam, seam_attributes), for tests."""
        fields: dict[str, bytes] = {"tee_tcb_svn": bytes(TDX_COMPONENTS), **td_fields}
        body = quoting.td_report_body(
            identity,
            mr_seam=bytes.fromhex(self.settings["mr_seam"]),
            report_data=report_data,
            td15=v5,
            **fields,
        )
        header = quoting.header(
            qe_svn=QE_ISV_SVN, pce_svn=PLATFORM_PCE_SVN, tdx=True, version=5 if v5 else 4
        )
        return self._sign("TDX", header + body)

    def sealing_key(self, identity: SgxIdentity, policy: str, isv_svn: int) -> bytes:
        """EGETKEY's seal key for ``identity``: bound to its MRENCLAVE (``policy``
        "mrenclave"), or to MRSIGNER, ISV product id and the requested ``isv_svn``
        ("mrsigner"). The debug flag is always part of the key, as SGX always includes the
        DEBUG attribute. Whether ``isv_svn`` may be asked for is the caller's check."""
        if policy == "mrenclave":
            subject = identity.mr_enclave
        elif policy == "mrsigner":
            subject = identity.mr_signer + struct.pack("<HH", identity.isv_prod_id, isv_svn)
        else:
            raise ValueError(f"unknown key policy {policy!r}")
        info = b"teaclave-ma simulated seal key\0%s\0%s\0%d" % (
            policy.encode(),
            subject,
            identity.debug,
        )
        hkdf = HKDF(hashes.SHA256(), SEALING_KEY_SIZE, salt=None, info=info)
        return hkdf.derive(self.sealing_secret)

    def _sign(self, tee: str, signed: bytes) -> bytes:
        qe = self.quoting_enclaves[tee]
        key = self.keys[ATTESTATION_KEY[tee]]
        signature = quoting.signature_data(
            quote_signature=sign_raw(key, signed),
            attestation_key=raw_public_key(key),
            qe_report=qe.report,
            qe_report_signature=qe.report_signature,
            qe_auth_data=qe.auth_data,
            pck_chain_pem=self.pck_chain_pem,
            wrapped=tee == "TDX",
        )
        return signed + struct.pack("<I", len(signature)) + signature

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "settings": self.settings,
            "keys": {name: _pem_key(key) for name, key in self.keys.items()},
            "certs": {name: _pem_cert(cert) for name, cert in self.certs.items()},
            "quoting_enclaves": {tee: qe.to_state() for tee, qe in self.quoting_enclaves.items()},
            "sealing_secret": self.sealing_secret.hex(),
        }
        atomic_write(
            directory / WARNING_FILE,
            b"SIMULATED SGX PLATFORM: development and tests only. Its keys are on disk;\n"
            b"its quotes prove nothing about hardware.\n",
        )
        atomic_write(directory / STATE_FILE, json.dumps(state, indent=1).encode(), mode=0o600)
        atomic_write(directory / "root.der", self.root_certificate_der)
        atomic_write(directory / "collateral.json", self.collateral_json("SGX"))
        atomic_write(directory / "collateral-tdx.json", self.collateral_json("TDX"))

    @classmethod
    def load(cls, directory: Path) -> SimulatedPlatform:
        path = Path(directory) / STATE_FILE
        try:
            state = json.loads(path.read_bytes())
            if state["settings"]["format"] != FORMAT:
                raise SimulatedPlatformError(
                    str(path), f"unknown format {state['settings']['format']!r}"
                )
            keys = {}
            for key_name, pem in state["keys"].items():
                key = serialization.load_pem_private_key(pem.encode(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise SimulatedPlatformError(str(path), f"key {key_name!r} is not an EC key")
                keys[key_name] = key
            if "sealing_secret" not in state:
                # A new random secret would silently make every sealed state unreadable.
                raise SimulatedPlatformError(
                    str(path),
                    "no sealing secret (made by an older teaclave-ma): run `teaclave-ma sim init` again",
                )
            platform = cls(
                keys=keys,
                certs={
                    n: load_pem_chain(pem.encode(), f"{path}: certs.{n}", SimulatedPlatformError)[0]
                    for n, pem in state["certs"].items()
                },
                settings=state["settings"],
                quoting_enclaves={
                    tee: QuotingEnclave.from_state(qe)
                    for tee, qe in state["quoting_enclaves"].items()
                },
                sealing_secret=bytes.fromhex(state["sealing_secret"]),
            )
            platform._issue_collateral()
        except FileNotFoundError as exc:
            raise SimulatedPlatformError(
                str(path), "no simulated platform here (run `teaclave-ma sim init`)"
            ) from exc
        except (ValueError, KeyError, TypeError, IndexError, CollateralError) as exc:
            raise SimulatedPlatformError(
                str(path), f"corrupt simulated platform state ({exc!r})"
            ) from exc
        _warn(f"loaded from {directory}")
        return platform


def _quoting_enclave(
    keys: dict[str, ec.EllipticCurvePrivateKey], tee: str, settings: dict[str, Any]
) -> QuotingEnclave:
    """The QE report certifying ``tee``'s attestation key, signed by the PCK key."""
    auth_data = secrets.token_bytes(32)
    attestation_key = raw_public_key(keys[ATTESTATION_KEY[tee]])
    report = quoting.report_body(
        cpu_svn=bytes(PLATFORM_COMPONENTS),
        attributes=quoting.attributes(0x11, 0xE7),
        mr_enclave=secrets.token_bytes(32),
        mr_signer=bytes.fromhex(settings["qe_mr_signer"][tee]),
        isv_prod_id=QE_PROD_ID[tee],
        isv_svn=QE_ISV_SVN,
        config_svn=0,
        report_data=hashlib.sha256(attestation_key + auth_data).digest() + bytes(32),
    )
    return QuotingEnclave(report, sign_raw(keys["pck"], report), auth_data)
