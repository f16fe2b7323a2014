"""The serving epoch moves once per committed transaction that changed a project, an alias
or a rollout, and for nothing else; the store that committed it also knows at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from fineloop.config import Settings
from fineloop.registry.aliases import set_alias
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import register_version
from fineloop.schemas import ItemIn, ProjectCreate
from fineloop.store import Store
from fineloop.store.items import upsert_items
from fineloop.store.projects import create_project, get_project
from fineloop.tasks import get_task


def stored(store: Store) -> int:
    with store.read() as session:
        return store.epoch.read(session)


def make(store: Store, name: str = "p") -> None:
    with store.write() as session:
        create_project(session, ProjectCreate(name=name, task="embedding", base_model="m"))


def test_a_routed_change_moves_it_once_per_transaction(store: Store) -> None:
    start, local = stored(store), store.epoch.local
    make(store)
    assert (stored(store), store.epoch.local) == (start + 1, local + 1)
    with store.write() as session:  # v0, the champion alias and a project edit: one move
        found = get_project(session, "p")
        ensure_base_version(session, found, get_task("embedding"))
        found.description = "edited"
    assert stored(store) == start + 2 and store.epoch.local == local + 2


def test_other_writes_leave_it_alone(store: Store) -> None:
    make(store)
    start, local = stored(store), store.epoch.local
    with store.write() as session:
        found = get_project(session, "p")
        register_version(session, found, artifact_uri="m1", base_model="m")
        upsert_items(session, found.id, [ItemIn(id="a", text="hello")])
    assert (stored(store), store.epoch.local) == (start, local)


def test_a_rolled_back_change_does_not_move_it(store: Store) -> None:
    make(store)
    start, local = stored(store), store.epoch.local
    with pytest.raises(RuntimeError), store.write() as session:
        get_project(session, "p").description = "never"
        session.flush()
        raise RuntimeError("rolled back")
    assert (stored(store), store.epoch.local) == (start, local)


def test_a_savepoint_rolled_back_keeps_the_outer_change(store: Store) -> None:
    make(store)
    start = stored(store)
    with store.write() as session:
        found = get_project(session, "p")
        version = register_version(session, found, artifact_uri="m1", base_model="m")
        set_alias(session, found, "staging", version, reason="test")
        with pytest.raises(IntegrityError), session.begin_nested():  # a duplicate number
            register_version(session, found, artifact_uri="m2", base_model="m", number=0)
    assert stored(store) == start + 1


def test_another_stores_commit_moves_the_stored_value_not_this_ones_local(
    store: Store, settings: Settings
) -> None:
    other = Store.open(settings)
    try:
        start, local = stored(store), store.epoch.local
        make(other)
        assert stored(store) == start + 1 and store.epoch.local == local
    finally:
        other.close()


def test_concurrent_changes_each_count(store: Store, settings: Settings) -> None:
    """On PostgreSQL the row lock serialises the bumps; none is lost."""
    for name in ("a", "b", "c", "d"):
        make(store, name)
    start = stored(store)
    stores = [Store.open(settings) for _ in range(4)]

    def edit(opened: Store, name: str) -> None:
        for i in range(5):
            with opened.write() as session:
                get_project(session, name).description = f"edit {i}"

    threads = [
        threading.Thread(target=edit, args=(s, n)) for s, n in zip(stores, "abcd", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in stores:
        opened.close()
    assert stored(store) == start + 20
