"""Who may serve: search, select and embeddings take an ingest key; calibration needs admin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.store import Store
from serving.helpers import CATALOG, items

ADMIN_KEY, INGEST_KEY = (
    "admin-secret-0123456789abcdefghijklmn",
    "ingest-secret-0123456789abcdefghijk",
)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
INGEST = {"Authorization": f"Bearer {INGEST_KEY}"}


@pytest.fixture
def keyed(settings: Settings, store: Store, tiny_model: Path) -> Iterator[TestClient]:
    with_keys = get_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        api_keys=f"{ADMIN_KEY}:admin,{INGEST_KEY}:ingest",
    )
    with TestClient(create_app(with_keys, store)) as client:
        client.post(
            "/v1/projects",
            json={"name": "shop", "task": "embedding", "base_model": str(tiny_model)},
            headers=ADMIN,
        )
        client.put("/v1/projects/shop/items", json={"items": items(CATALOG)}, headers=ADMIN)
        yield client


def test_an_ingest_key_serves_but_does_not_refit(keyed: TestClient) -> None:
    search = keyed.post("/v1/projects/shop/search", json={"query": "refund"}, headers=INGEST)
    select = keyed.post("/v1/projects/shop/select", json={"query": "refund"}, headers=INGEST)
    embed = keyed.post("/v1/embeddings", json={"model": "shop", "input": "hi"}, headers=INGEST)
    refit = keyed.post("/v1/projects/shop/calibration", headers=INGEST)
    shown = keyed.get("/v1/projects/shop/calibration", headers=ADMIN)

    assert [r.status_code for r in (search, select, embed)] == [200, 200, 200]
    assert refit.status_code == 403
    assert shown.status_code == 200 and shown.json()["method"] == "default"


def test_without_a_key_embeddings_answer_401_in_openai_shape(keyed: TestClient) -> None:
    response = keyed.post("/v1/embeddings", json={"model": "shop", "input": "hi"})
    wrong = keyed.post(
        "/v1/embeddings",
        json={"model": "shop", "input": "hi"},
        headers={"Authorization": "Bearer nope"},
    )

    assert response.status_code == wrong.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert keyed.post("/v1/projects/shop/search", json={"query": "x"}).status_code == 401
