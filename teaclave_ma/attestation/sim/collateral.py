"""TCB info (v3) and QE identity (v2) JSON for the simulated platform, signed like Intel's.

The TCB levels are arranged so that the platform's SVNs fall into a level with exactly the
status a test asks for: a higher level above it (UpToDate) that the platform does not
reach, the platform's own level, and an older OutOfDate level below.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from teaclave_ma.attestation.collateral import TCB_LEVEL_STATUSES
from teaclave_ma.attestation.sim.quoting import INTEL_TDX_MODULE_MRSIGNER
from teaclave_ma.errors import ConfigError

SIM_ADVISORY = "TEACLAVE-SIM-SA-0001"
QE_ISV_SVN = 8


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _level(
    components: Sequence[int],
    pce_svn: int,
    status: str,
    date: str,
    tdx: Sequence[int] | None = None,
) -> dict[str, object]:
    tcb: dict[str, object] = {
        "sgxtcbcomponents": [{"svn": svn} for svn in components],
        "pcesvn": pce_svn,
    }
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": svn} for svn in tdx]
    level: dict[str, object] = {
        "tcb": tcb,
        "tcbDate": date,
        "tcbStatus": status,
    }
    if status != "UpToDate":
        level["advisoryIDs"] = [SIM_ADVISORY]
    return level


def tcb_info_json(
    *,
    fmspc: bytes,
    components: Sequence[int],
    pce_svn: int,
    status: str,
    issued: dt.datetime,
    next_update: dt.datetime,
    tdx_components: Sequence[int] | None = None,
) -> bytes:
    """SGX TCB info, or with ``tdx_components`` the TDX TCB info of the same platform."""
    if status not in TCB_LEVEL_STATUSES:
        raise ConfigError("tcb_status", f"{status!r} is not a status of a TCB level")
    tdx = list(tdx_components) if tdx_components is not None else None
    levels = []
    if status != "UpToDate":
        higher = [svn + 1 for svn in tdx] if tdx is not None else None
        levels.append(
            _level(
                [svn + 1 for svn in components],
                pce_svn + 1,
                "UpToDate",
                "2026-06-01T00:00:00Z",
                higher,
            )
        )
    levels.append(_level(components, pce_svn, status, "2025-06-01T00:00:00Z", tdx))
    levels.append(
        _level(
            [0] * 16, 0, "OutOfDate", "2020-01-01T00:00:00Z", [0] * 16 if tdx is not None else None
        )
    )
    document: dict[str, object] = {
        "id": "SGX" if tdx is None else "TDX",
        "version": 3,
        "issueDate": _time(issued),
        "nextUpdate": _time(next_update),
        "fmspc": fmspc.hex().upper(),
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 1,
        "tcbLevels": levels,
    }
    if tdx is not None:
        # The simulated TDs run a TDX 1.0 module (TEE_TCB_SVN[1] = 0), checked against this
        # section alone; a TCB info with module identities lists at least one, so none here.
        document["tdxModule"] = {
            "mrsigner": INTEL_TDX_MODULE_MRSIGNER.hex().upper(),
            "attributes": "00" * 8,
            "attributesMask": "FF" * 8,
        }
    return json.dumps(document, separators=(",", ":")).encode()


def qe_identity_json(
    *,
    mrsigner: bytes,
    isvprodid: int,
    issued: dt.datetime,
    next_update: dt.datetime,
    td: bool = False,
) -> bytes:
    """The identity of the SGX quoting enclave, or with ``td`` of the TD quoting enclave."""
    document = {
        "id": "TD_QE" if td else "QE",
        "version": 2,
        "issueDate": _time(issued),
        "nextUpdate": _time(next_update),
        "tcbEvaluationDataNumber": 1,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": mrsigner.hex().upper(),
        "isvprodid": isvprodid,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": QE_ISV_SVN},
                "tcbDate": "2025-06-01T00:00:00Z",
                "tcbStatus": "UpToDate",
            },
            {
                "tcb": {"isvsvn": 0},
                "tcbDate": "2020-01-01T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": [SIM_ADVISORY],
            },
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()
