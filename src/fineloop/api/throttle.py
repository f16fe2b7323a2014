"""Per-client limit on failed authentications: past it, 429 with Retry-After.

Keys carry 256 random bits, so guessing is hopeless; what the limit stops is cost. Every
distinct bogus key is a query and an entry in the key cache, so a client that keeps sending
them is told to wait instead. The table of clients is bounded too: at most `max_clients`
addresses, the least recently failing forgotten first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from fineloop.errors import FineloopError

WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000


class TooManyFailures(FineloopError):
    """429: this client sent too many unknown keys in the last minute."""

    status = 429
    code = "too_many_failures"

    def __init__(self, retry_after: int, limit: int) -> None:
        super().__init__(
            f"more than {limit} requests with an unknown API key from this address in a "
            f"minute; wait {retry_after} s and send a valid key "
            "(the limit is the setting auth_failures_per_minute)"
        )
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class FailureThrottle:
    """Counts failures per client in fixed one-minute windows."""

    def __init__(self, per_minute: int, max_clients: int = MAX_CLIENTS) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Seconds this client must wait, or None if it may try now."""
        if self.per_minute <= 0:
            return None
        with self._lock:
            window = self._windows.get(client)
        if window is None:
            return None
        started, failures = window
        left = started + WINDOW_SECONDS - time.monotonic()
        if left <= 0 or failures < self.per_minute:
            return None
        return max(1, math.ceil(left))

    def check(self, client: str) -> None:
        """Raise TooManyFailures if this client is over the limit."""
        wait = self.retry_after(client)
        if wait is not None:
            raise TooManyFailures(wait, self.per_minute)

    def failed(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            started, failures = self._windows.pop(client, (now, 0))
            if now - started >= WINDOW_SECONDS:
                started, failures = now, 0
            self._windows[client] = (started, failures + 1)  # now the most recent
            while len(self._windows) > self.max_clients:
                self._windows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._windows)
