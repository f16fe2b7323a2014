"""The serving epoch: a counter that grows with every committed change to what serving
resolves per request — a project's row (task, serving policy), its aliases (promotion,
rollback, alias moves), its rollouts (start, weights, policy, end).

Serving processes cache that resolution (serving/routing_cache.py) and only need to know
whether anything changed since they last looked: one primary-key read of one row. The
bump is an `UPDATE ... SET value = value + 1` in the same transaction as the change, so
the counter moves exactly when the change becomes visible, in commit order on every
backend (the row lock serialises bumps on PostgreSQL; SQLite has one writer anyway).

The bump is not left to each caller: session events on the store's sessions notice any
inserted, changed or deleted `Project`, `Alias` or `Rollout` and bump just before COMMIT,
so every path (API, CLI, training jobs, the rollout policy, tests) is covered and the row
lock is the last one a transaction takes (no lock-order deadlocks). Writes that bypass the
ORM (Core `update()`/`insert()`) on those tables would not be noticed: there are none.

After such a commit, `Epoch.local` also grows in this process, so the process that made a
change serves it at once (read-your-writes) instead of at its next periodic check.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from fineloop.store.schema import Alias, Project, Rollout, ServingEpoch, table

WATCHED = (Project, Alias, Rollout)
ROW = 1
_CHANGED = "fineloop_serving_changed"  # session.info flags
_BUMPED = "fineloop_serving_bumped"


class Epoch:
    """This store's view of the serving epoch: the stored counter and a local one."""

    def __init__(self) -> None:
        self._local = itertools.count(1)
        self._lock = threading.Lock()
        self.local = 0  # grows after each commit in this process that bumped the epoch

    def read(self, session: Session) -> int:
        """The stored counter (0 before anything changed)."""
        value = session.scalar(select(ServingEpoch.value).where(ServingEpoch.id == ROW))
        return int(value or 0)

    def watch(self, factory: sessionmaker[Session]) -> None:
        """Bump the counter in every transaction of `factory` that changes a watched row."""
        event.listen(factory, "before_flush", _note_changes)
        event.listen(factory, "before_commit", _bump)
        event.listen(factory, "after_commit", self._committed)
        event.listen(factory, "after_soft_rollback", _clear)

    def _committed(self, session: Session) -> None:
        if session.info.pop(_BUMPED, False):
            with self._lock:
                self.local = next(self._local)


def _note_changes(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(_CHANGED):
        return
    for group in (session.new, session.dirty, session.deleted):
        if any(isinstance(row, WATCHED) for row in group):
            session.info[_CHANGED] = True
            return


def _bump(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: the outer commit bumps
        return
    session.flush()  # the commit's own flush comes after this hook: see its changes now
    if not session.info.pop(_CHANGED, False):
        return
    epoch = table(ServingEpoch)
    bumped = session.execute(update(epoch).where(epoch.c.id == ROW).values(value=epoch.c.value + 1))
    if bumped.rowcount == 0:  # type: ignore[attr-defined]  # a store made without migrations
        session.execute(epoch.insert().values(id=ROW, value=1))
    session.info[_BUMPED] = True


def _clear(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is not None:  # a savepoint: what the outer transaction did stands
        return
    session.info.pop(_CHANGED, None)
    session.info.pop(_BUMPED, None)
