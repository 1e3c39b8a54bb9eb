"""One fetch for many callers, and how long each caller may wait for it.

Peer verification runs inside TLS handshakes, each bounded by its deadline. When several
handshakes need the same collateral at once, the first fetches it and the others wait for
that fetch (single-flight): a burst of peers from one platform costs the PCCS one fetch,
not one each. No caller waits past its own deadline, which the handshake declares for the
work done inside it (``deadline``); a caller without one waits as long as it is told.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "teaclave_ma_deadline", default=None
)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Declare that the work inside the block must be over by ``at`` (``time.monotonic``)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def seconds_left(default: float) -> float:
    """How long the current caller may still wait: ``default`` at most, less if its
    deadline comes sooner (0 once it has passed)."""
    at = _deadline.get()
    return default if at is None else max(0.0, min(default, at - time.monotonic()))


class SingleFlight(Generic[K, V]):
    """Runs ``work`` once for all the callers that ask for the same key while it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, Future[V]] = {}

    def in_flight(self, key: K) -> bool:
        with self._lock:
            return key in self._flights

    def run(self, key: K, work: Callable[[], V], *, wait: float) -> V:
        """``work()``'s result (or exception), shared. The first caller for ``key`` runs it;
        a caller that arrives meanwhile waits for that run, at most ``wait`` seconds, then
        raises ``TimeoutError`` (the run goes on, for those who are still waiting)."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if not leader:
            return flight.result(timeout=wait)
        try:
            result = work()
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            with self._lock:
                del self._flights[key]
