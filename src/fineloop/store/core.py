"""`Store`: an engine, migrated on open, with read and write sessions; `epoch` tells serving
whether what it resolves per request changed (store/epoch.py); `before_session` hooks run
before a thread's outermost session opens (the interaction journal flushes there, so a
process always reads its own writes: serving/journal.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fineloop.config import Settings
from fineloop.store import migrate
from fineloop.store.engine import build_engine, writer
from fineloop.store.epoch import Epoch


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)
        self.epoch = Epoch()
        self.epoch.watch(self._read)
        self.epoch.watch(self._write)
        self.before_session: list[Callable[[], None]] = []
        self._depth = threading.local()

    @classmethod
    def open(cls, settings: Settings, *, migrate_schema: bool = True) -> Store:
        engine = build_engine(settings)
        if migrate_schema:
            migrate.upgrade(engine)
        return cls(engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._outermost(), self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._outermost(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def _outermost(self) -> Iterator[None]:
        """Run the hooks before a thread's first session only: a nested session must not
        write (SQLite's one writer may be this thread's own open transaction)."""
        depth: int = getattr(self._depth, "value", 0)
        if depth == 0:
            for hook in self.before_session:
                hook()
        self._depth.value = depth + 1
        try:
            yield
        finally:
            self._depth.value = depth

    def close(self) -> None:
        self.engine.dispose()
