"""The one small interface through which the server and the peer check report what they
see. It names events, not metric types, so that the transport does not depend on
Prometheus (``observability.metrics`` implements it) and tests or benchmarks pass
``NO_OBSERVER``."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Observer(Protocol):
    def handshake_accepted(self) -> None: ...

    def handshake_refused(self, check: str) -> None:
        """``check``: the refusing check's name (``VerificationError.check``)."""

    def certificate_cache(self, hit: bool) -> None: ...

    def rpc_served(self, method: str, seconds: float) -> None: ...

    def manifest_in_force(self, version: int, expires: dt.datetime) -> None: ...

    def collateral_expiry(self, next_update: dt.datetime) -> None: ...


class _NoObserver:
    def handshake_accepted(self) -> None:
        pass

    def handshake_refused(self, check: str) -> None:
        pass

    def certificate_cache(self, hit: bool) -> None:
        pass

    def rpc_served(self, method: str, seconds: float) -> None:
        pass

    def manifest_in_force(self, version: int, expires: dt.datetime) -> None:
        pass

    def collateral_expiry(self, next_update: dt.datetime) -> None:
        pass


NO_OBSERVER: Observer = _NoObserver()
