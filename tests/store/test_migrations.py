"""Migrations: a blank database becomes exactly the schema in `fineloop.store.schema`.

These tests start from an empty SQLite file or an empty PostgreSQL database (not the
migrated template the other tests copy), because creating the schema is what they check.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from conftest import POSTGRES_ADMIN_URL, _admin
from fineloop.config import Settings, get_settings
from fineloop.store import Store, migrate
from fineloop.store.schema import Base

TABLES = set(Base.metadata.tables)
HEAD = "0008"


@pytest.fixture
def blank(tmp_path: Path) -> Iterator[Settings]:
    """Settings pointing at a database with no tables at all."""
    if not POSTGRES_ADMIN_URL:
        yield get_settings(data_dir=tmp_path / "blank")
        return
    name = f"fl_blank_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield get_settings(data_dir=tmp_path / "blank", database_url=url)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names()) - {"alembic_version"}


def _schema_drift(store: Store) -> list[object]:
    with store.engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _revision(store: Store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_open_creates_every_table_on_a_blank_database(blank: Settings) -> None:
    store = Store.open(blank)
    try:
        assert _tables(store) == TABLES
        assert _revision(store) == HEAD
    finally:
        store.close()


def test_migrated_schema_matches_the_models_exactly(blank: Settings) -> None:
    store = Store.open(blank)
    try:
        assert _schema_drift(store) == []
    finally:
        store.close()


def test_downgrade_to_base_then_upgrade_again(blank: Settings) -> None:
    store = Store.open(blank)
    try:
        migrate.downgrade(store.engine, "base")
        assert _tables(store) == set()
        assert _revision(store) is None
        migrate.upgrade(store.engine)
        assert _tables(store) == TABLES
        assert _schema_drift(store) == []
    finally:
        store.close()


def test_opening_twice_changes_nothing(blank: Settings) -> None:
    first = Store.open(blank)
    with first.write() as session:
        session.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, scope, revoked, created_at) "
                "VALUES ('k', 'fl_x', 'h', 'ingest', false, '2024-01-01 00:00:00')"
            )
        )
    first.close()
    second = Store.open(blank)
    try:
        assert _revision(second) == HEAD
        assert _tables(second) == TABLES
        with second.read() as session:
            assert session.scalar(text("SELECT count(*) FROM api_keys")) == 1
    finally:
        second.close()


def test_threads_opening_a_fresh_database_at_once_all_succeed(blank: Settings) -> None:
    errors: list[BaseException] = []
    opened: list[Store] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        try:
            opened.append(Store.open(blank))
        except BaseException as error:  # reported below, with the test's assertion
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert errors == []
    assert len(opened) == 4
    check = Store.open(blank)
    try:
        assert _tables(check) == TABLES
        assert _schema_drift(check) == []
    finally:
        check.close()


OPEN_SCRIPT = """
import sys
from fineloop.config import get_settings
from fineloop.store import Store
settings = get_settings(data_dir=sys.argv[1], database_url=sys.argv[2] or None)
Store.open(settings).close()
print("opened")
"""


def test_processes_opening_a_fresh_database_at_once_all_succeed(blank: Settings) -> None:
    args = [str(blank.data_dir), blank.database_url or ""]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_SCRIPT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == "opened"
    check = Store.open(blank)
    try:
        assert _tables(check) == TABLES
        assert _revision(check) == HEAD
    finally:
        check.close()


@pytest.mark.skipif(bool(POSTGRES_ADMIN_URL), reason="SQLite pragmas")
def test_sqlite_connections_use_wal_and_enforce_foreign_keys(blank: Settings) -> None:
    store = Store.open(blank)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        store.close()


@pytest.mark.skipif(bool(POSTGRES_ADMIN_URL), reason="SQLite pragmas")
def test_sqlite_synchronous_follows_the_setting(tmp_path: Path) -> None:
    store = Store.open(get_settings(data_dir=tmp_path / "fast", sqlite_synchronous="normal"))
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        store.close()


def test_foreign_keys_are_enforced(blank: Settings) -> None:
    store = Store.open(blank)
    try:
        with pytest.raises(IntegrityError), store.write() as session:
            session.execute(
                text(
                    "INSERT INTO items (project_id, item_id, text, metadata, created_at, "
                    "updated_at) VALUES (999, 'a', 'b', '{}', '2024-01-01', '2024-01-01')"
                )
            )
        with store.read() as session:
            assert session.scalar(text("SELECT count(*) FROM items")) == 0
    finally:
        store.close()


def test_upgrading_a_0001_store_keeps_its_projects(tmp_path: Path) -> None:
    settings = get_settings(data_dir=tmp_path)
    store = Store.open(settings, migrate_schema=False)
    migrate.upgrade(store.engine, "0001")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO projects (name, task, description, reward_policy, created_at,"
                " updated_at) VALUES ('old', 'embedding', '', '{}', '2026-01-01 00:00:00.000000',"
                " '2026-01-01 00:00:00.000000')"
            )
        )
    migrate.upgrade(store.engine)
    with store.engine.connect() as connection:
        row = connection.execute(
            text("SELECT name, training_policy, serving_policy FROM projects")
        ).one()
    assert row[0] == "old"
    assert row[1] in ("{}", {}) and row[2] in ("{}", {})
    assert _revision(store) == HEAD
    store.close()


def test_upgrading_a_0002_store_adds_rollouts_and_keeps_interactions(blank: Settings) -> None:
    store = Store.open(blank, migrate_schema=False)
    migrate.upgrade(store.engine, "0002")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO projects (name, task, description, reward_policy, training_policy,"
                " serving_policy, created_at, updated_at) VALUES ('old', 'embedding', '', '{}',"
                " '{}', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO interactions (project_id, id, input, output, variant, metadata,"
                " created_at) SELECT id, 'i1', '\"q\"', '{}', 'champion', '{}',"
                " '2026-01-01 00:00:00' FROM projects"
            )
        )
    assert "rollouts" not in _tables(store)
    migrate.upgrade(store.engine)
    assert _revision(store) == HEAD
    assert {"rollouts", "rollout_history"} <= _tables(store)
    assert _schema_drift(store) == []
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT variant FROM interactions")).scalar() == "champion"
    migrate.downgrade(store.engine, "0002")
    later = {"rollouts", "rollout_history", "webhook_secrets", "serving_epoch", "review_answers"}
    assert _tables(store) == TABLES - later
    store.close()


def test_upgrading_a_0003_store_adds_webhook_secrets_and_keeps_projects(blank: Settings) -> None:
    store = Store.open(blank, migrate_schema=False)
    migrate.upgrade(store.engine, "0003")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO projects (name, task, description, reward_policy, training_policy,"
                " serving_policy, created_at, updated_at) VALUES ('old', 'embedding', '', '{}',"
                " '{}', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    assert "webhook_secrets" not in _tables(store)
    migrate.upgrade(store.engine)
    assert _revision(store) == HEAD and "webhook_secrets" in _tables(store)
    assert _schema_drift(store) == []
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM projects")).scalar() == "old"
    migrate.downgrade(store.engine, "0003")
    assert _tables(store) == TABLES - {"webhook_secrets", "serving_epoch", "review_answers"}
    store.close()


def test_upgrading_a_0005_store_adds_the_serving_epoch_row_and_keeps_projects(
    blank: Settings,
) -> None:
    store = Store.open(blank, migrate_schema=False)
    migrate.upgrade(store.engine, "0005")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO projects (name, task, description, reward_policy, training_policy,"
                " serving_policy, created_at, updated_at) VALUES ('old', 'embedding', '', '{}',"
                " '{}', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    migrate.upgrade(store.engine)
    assert _revision(store) == HEAD and _schema_drift(store) == []
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM projects")).scalar() == "old"
        rows = connection.execute(text("SELECT id, value FROM serving_epoch")).all()
    assert [tuple(row) for row in rows] == [(1, 0)]
    migrate.downgrade(store.engine, "0005")
    assert "serving_epoch" not in _tables(store)
    store.close()


def test_upgrading_a_0006_store_gives_old_projects_the_default_review_policy(
    blank: Settings,
) -> None:
    from fineloop.policies import ReviewPolicy
    from fineloop.store.projects import get_project, project_public

    store = Store.open(blank, migrate_schema=False)
    migrate.upgrade(store.engine, "0006")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO projects (name, task, description, reward_policy, training_policy,"
                " serving_policy, task_options, created_at, updated_at) VALUES ('old',"
                " 'embedding', '', '{}', '{}', '{}', '{}', '2026-01-01 00:00:00',"
                " '2026-01-01 00:00:00')"
            )
        )
    migrate.upgrade(store.engine)
    assert _revision(store) == HEAD and _schema_drift(store) == []
    with store.read() as session:
        assert project_public(get_project(session, "old")).review_policy == ReviewPolicy()
    migrate.downgrade(store.engine, "0006")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM projects")).scalar() == "old"
    store.close()
