"""`Store`: an engine, migrated on open, with read and write sessions; `epoch` tells serving
whether what it resolves per request changed (store/epoch.py)."""

from __future__ import annotations

from collections.abc import Iterator
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

    @classmethod
    def open(cls, settings: Settings, *, migrate_schema: bool = True) -> Store:
        engine = build_engine(settings)
        if migrate_schema:
            migrate.upgrade(engine)
        return cls(engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._write() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
