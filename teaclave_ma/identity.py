"""The identity of an SGX enclave or a TDX guest, as attested evidence states it."""

from __future__ import annotations

from collections.abc import Callable

import attrs


def _size(nbytes: int) -> Callable[[object, attrs.Attribute[bytes], bytes], None]:
    """An attrs validator: the field holds exactly ``nbytes`` bytes."""

    def check(_inst: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != nbytes:
            raise ValueError(f"{attribute.name} must be {nbytes} bytes, got {len(value)}")

    return check


@attrs.frozen
class SgxIdentity:
    """Measurement fields of one enclave: what a manifest entry is matched against."""

    mr_enclave: bytes = attrs.field(validator=_size(32))
    mr_signer: bytes = attrs.field(validator=_size(32))
    isv_prod_id: int
    isv_svn: int
    debug: bool
    config_svn: int = 0

    def describe(self) -> dict[str, object]:
        """JSON-friendly view, with the field names used across CLI output."""
        return {
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "config_svn": self.config_svn,
            "debug": self.debug,
        }

    @property
    def measurement_text(self) -> str:
        """How messages name this identity: its MRENCLAVE."""
        return f"mr_enclave {self.mr_enclave.hex()}"


TD_ATTRIBUTES_DEBUG = 0x01


@attrs.frozen
class TdxIdentity:
    """Measurement fields of one TDX guest (TD): MRTD, the runtime measurement registers,
    and the TD attributes and XFAM that a manifest's ``tdx`` entries are matched against."""

    mr_td: bytes = attrs.field(validator=_size(48))
    rtmr0: bytes = attrs.field(validator=_size(48))
    rtmr1: bytes = attrs.field(validator=_size(48))
    rtmr2: bytes = attrs.field(validator=_size(48))
    rtmr3: bytes = attrs.field(validator=_size(48))
    td_attributes: bytes = attrs.field(validator=_size(8))
    xfam: bytes = attrs.field(validator=_size(8))

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    @property
    def measurement_text(self) -> str:
        return f"mr_td {self.mr_td.hex()}"

    def describe(self) -> dict[str, object]:
        return {
            "mr_td": self.mr_td.hex(),
            "rtmr0": self.rtmr0.hex(),
            "rtmr1": self.rtmr1.hex(),
            "rtmr2": self.rtmr2.hex(),
            "rtmr3": self.rtmr3.hex(),
            "td_attributes": self.td_attributes.hex(),
            "xfam": self.xfam.hex(),
            "debug": self.debug,
        }


PeerMeasurement = SgxIdentity | TdxIdentity


@attrs.frozen
class Platform:
    """The machine a quote was made on, as the verified PCK certificate's SGX extension
    states it: its FMSPC (processor family, model and platform type) and its PPID (this one
    platform). A manifest entry may admit only some of either."""

    fmspc: bytes = attrs.field(validator=_size(6))
    ppid: bytes = attrs.field(validator=_size(16))

    def describe(self) -> dict[str, object]:
        return {"fmspc": self.fmspc.hex(), "ppid": self.ppid.hex()}
