"""A new champion is indexed in the background and swapped in; until then the old one answers.
Also: v0 appears once however many callers race to create it."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fineloop.registry.aliases import set_alias
from fineloop.registry.versions import CHAMPION, register_version
from fineloop.serving import champion_changed, get_serving
from fineloop.serving.versions import ensure_champion
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import AliasChange, ModelVersion
from serving.helpers import search


def register_and_promote(store: Store, project: str, model: Path) -> None:
    with store.write() as session:
        found = get_project(session, project)
        v1 = register_version(session, found, artifact_uri=str(model), base_model=str(model))
        set_alias(session, found, CHAMPION, v1, reason="test promotion")


def test_promotion_rebuilds_in_the_background_then_swaps(
    client: TestClient, catalog: str, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    assert search(client, catalog, "refund")["model_version"] == "v0"
    serving = get_serving(client.app)
    gate = threading.Event()
    serving.background.submit(lambda: gate.wait(30))  # hold the worker: the build must queue

    register_and_promote(store, catalog, Path(shutil.copytree(tiny_model, tmp_path / "v1")))
    during = search(client, catalog, "reset my password")
    gate.set()
    serving.background.join()
    after = search(client, catalog, "reset my password")

    assert during["model_version"] == "v0"  # the old index kept answering
    assert after["model_version"] == "v1"
    assert [h["id"] for h in after["items"]] == [h["id"] for h in during["items"]]  # same weights
    logged = client.get(f"/v1/projects/{catalog}/interactions/{after['interaction_id']}")
    assert logged.json()["model_version"] == "v1"


def test_champion_changed_hook_starts_the_build_before_any_search(
    client: TestClient, catalog: str, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    search(client, catalog, "refund")
    register_and_promote(store, catalog, Path(shutil.copytree(tiny_model, tmp_path / "v1")))

    champion_changed(client.app, catalog)
    get_serving(client.app).background.join()

    assert search(client, catalog, "refund")["model_version"] == "v1"


def test_a_named_version_is_served_on_request(
    client: TestClient, catalog: str, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    search(client, catalog, "refund")
    register_and_promote(store, catalog, Path(shutil.copytree(tiny_model, tmp_path / "v1")))

    assert search(client, catalog, "refund", version="v0")["model_version"] == "v0"
    assert search(client, catalog, "refund", version="1")["model_version"] == "v1"


def test_racing_callers_create_one_v0(client: TestClient, shop: str, store: Store) -> None:
    results: list[object] = []

    def call() -> None:
        results.append(ensure_champion(store, shop))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
        assert session.scalar(select(func.count()).select_from(AliasChange)) == 1
