"""Key lookups cached by the key's SHA-256, in a bounded LRU with a time to live.

Anyone may send any token, so the cache must cost the same for a 1 MB bogus token as for a
real key: entries are keyed by the digest (64 characters), there are at most `max_entries`
of them, and each lives `ttl` seconds. Unknown keys are cached too (as None), so the same
bogus token sent again costs no query; the failure throttle (fineloop.api.throttle) limits
how many distinct ones a client gets to try.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from fineloop import auth
from fineloop.store import Store

V = TypeVar("V")
CACHE_SECONDS = 5.0  # a revoked key stops working within this long
MAX_CACHED_KEYS = 4096


class TtlLru(Generic[V]):
    """A thread-safe mapping of at most `max_entries`, each forgotten `ttl` seconds after
    it was stored; past the cap the least recently used entry goes."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[V] | None:
        """`(value,)`, or None if absent or expired (the value itself may be None)."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            stored, value = found
            if time.monotonic() - stored > self.ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return (value,)

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        """The keys held now (for tests and inspection), oldest first."""
        with self._lock:
            return iter(list(self._entries))


class KeyCache:
    """Whether keys are in use, and the scope of a key, for a few seconds each, so that
    authentication costs no query per request."""

    def __init__(self, store: Store, max_entries: int = MAX_CACHED_KEYS) -> None:
        self.store = store
        self.scopes: TtlLru[str | None] = TtlLru(max_entries, CACHE_SECONDS)
        self._auth_on: tuple[float, bool] = (0.0, False)

    def auth_enabled(self) -> bool:
        checked, enabled = self._auth_on
        if time.monotonic() - checked > CACHE_SECONDS:
            with self.store.read() as session:
                enabled = auth.any_key_exists(session)
            self._auth_on = (time.monotonic(), enabled)
        return enabled

    def scope_of(self, key: str) -> str | None:
        """The scope of an active key, None for an unknown or revoked one. Callers cap the
        key's length first (MAX_KEY_CHARS): hashing is the only work done on it."""
        digest = auth.hash_key(key)
        cached = self.scopes.get(digest)
        if cached is not None:
            return cached[0]
        with self.store.read() as session:
            scope = auth.find_scope_by_hash(session, digest)
        self.scopes.put(digest, scope)
        return scope

    def forget(self) -> None:
        self.scopes.clear()
        self._auth_on = (0.0, False)
