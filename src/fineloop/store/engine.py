"""Engines for the store: SQLite tuned for a durable embedded default, PostgreSQL as is.

SQLite transactions that write start with BEGIN IMMEDIATE, so two writers queue on the
busy timeout instead of failing halfway when one upgrades its read lock.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from fineloop.config import Settings


def dump_json(value: Any) -> str:
    """JSON text as the store writes it in JSON columns (bulk inserts that bypass the
    column types write the same text)."""
    # orjson is several times faster than json.dumps on the JSON columns of a big batch;
    # the standard library takes what orjson refuses (integers past 64 bits).
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _loads(value: Any) -> Any:
    # SQLite's NUMERIC affinity hands a bare JSON number back already as a number.
    if not isinstance(value, str | bytes):
        return value
    long_number = _LONG_TEXT if isinstance(value, str) else _LONG_BYTES
    if long_number.search(value):  # type: ignore[arg-type]
        # orjson reads an integer past 64 bits as a float: what was stored would not read
        # back (a seed of 2**70 came back as 1.18e21); the standard library keeps it exact.
        return json.loads(value)
    return orjson.loads(value)


# 2**63 has 19 digits: no shorter run of digits can be an integer orjson reads as a float.
_LONG_TEXT = re.compile(r"[0-9]{19}")
_LONG_BYTES = re.compile(rb"[0-9]{19}")


WRITE_OPTION = "fineloop_write"
WAL_RETRIES = 20  # about 7 s of waiting in all


def build_engine(settings: Settings) -> Engine:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            json_serializer=dump_json,
            json_deserializer=_loads,
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        json_serializer=dump_json,
        json_deserializer=_loads,
    )
    _tune_sqlite(engine, settings.sqlite_synchronous)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine whose transactions take the write lock up front on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _enable_wal(cursor: Any) -> None:
    """Switching a new database file to WAL needs a moment alone with it, and SQLite
    answers "database is locked" at once, without its busy handler, when several
    processes or threads open the fresh file together: wait and retry, as the handler would."""
    for attempt in range(WAL_RETRIES):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_RETRIES - 1:
                raise
            time.sleep(min(0.01 * 2**attempt, 0.5))


def _tune_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
