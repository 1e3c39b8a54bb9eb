"""The identity of an SGX enclave as attested evidence states it."""

from __future__ import annotations

import attrs


def _len32(_inst: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes, got {len(value)}")


@attrs.frozen
class SgxIdentity:
    """Measurement fields of one enclave: what a manifest entry is matched against."""

    mr_enclave: bytes = attrs.field(validator=_len32)
    mr_signer: bytes = attrs.field(validator=_len32)
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
