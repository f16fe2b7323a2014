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

from sqlalchemy import and_, func, select
from sqlalchemy.orm import aliased

from fineloop.store import Store
from fineloop.store.schema import Feedback, Interaction

LOOKBACK = 500

Page = Callable[[Store, int, int], Sequence[Any]]  # (store, after, top) -> rows, oldest first
Columns = Callable[[Any], Sequence[Any]]  # the aliased Interaction -> the columns to select


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


def project_pages(project_id: int, kinds: Sequence[str], columns: Columns, size: int) -> Page:
    """A `Page` of the project's feedback of these kinds in (after, top], oldest first, at
    most `size` rows, joined to the interaction it was given on (the alias `columns` gets).
    `project_id + 0` keeps the planner on the primary-key range: by the project index it
    would read every event the project ever had, on every refresh."""

    def read(store: Store, after: int, top: int) -> list[Any]:
        shown = aliased(Interaction)
        query = (
            select(*columns(shown))
            .outerjoin(
                shown,
                and_(shown.project_id == Feedback.project_id, shown.id == Feedback.interaction_id),
            )
            .where(
                Feedback.project_id + 0 == project_id,
                Feedback.id > after,
                Feedback.id <= top,
                Feedback.kind.in_(tuple(kinds)),
            )
            .order_by(Feedback.id)
            .limit(size)
        )
        with store.read() as session:
            return list(session.execute(query))

    return read


def shown_io(shown: Any) -> list[Any]:
    """The columns online adaptation reads: the event, and what its interaction was asked
    (`shown_input`) and answered (`shown_output`)."""
    return [
        Feedback.id,
        Feedback.kind,
        Feedback.payload,
        Feedback.input,
        shown.input.label("shown_input"),
        shown.output.label("shown_output"),
    ]
