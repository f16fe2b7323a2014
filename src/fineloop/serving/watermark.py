"""`FeedbackWatermark`: read each feedback row once, in id order, past a moving mark.

Serving memories (embedding judgements, generation corrections) refresh from the feedback
table without rereading it whole. On SQLite ids are assigned in commit order, so "above the
last id seen" is exact. On PostgreSQL ids are drawn at insert and transactions may commit
out of order: a row with a lower id can appear after a higher one was read. So there the last
`LOOKBACK` ids below the mark are read again and the ids already handed out are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import func, select

from fineloop.store import Store
from fineloop.store.schema import Feedback

LOOKBACK = 500

Page = Callable[[Store, int, int], Sequence[Any]]  # (store, after, top) -> rows, oldest first


class FeedbackWatermark:
    """Hands out each feedback row once; `pages` runs on one thread at a time."""

    def __init__(self) -> None:
        self.mark = 0
        self._seen: set[int] = set()

    def pages(self, store: Store, read_page: Page) -> Iterator[list[Any]]:
        """Yield the unseen rows up to the current top id, one page at a time."""
        with store.read() as session:
            top = session.scalar(select(func.max(Feedback.id))) or 0
            lookback = 0 if session.get_bind().dialect.name == "sqlite" else LOOKBACK
        after = max(0, self.mark - lookback)
        while top > after:
            page = read_page(store, after, top)
            if not page:
                break
            after = page[-1].id
            fresh = [row for row in page if row.id not in self._seen]
            if lookback:
                self._seen.update(row.id for row in fresh)
            yield fresh
        self.mark = max(self.mark, top)
        self._seen = {i for i in self._seen if i > self.mark - lookback}
