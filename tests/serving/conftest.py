"""An embedding project on the tiny model, with or without the hand-made catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.helpers import CATALOG, items


@pytest.fixture
def shop(client: TestClient, tiny_model: Path) -> str:
    """An embedding project whose base model is the tiny model; no items yet."""
    response = client.post(
        "/v1/projects",
        json={"name": "shop", "task": "embedding", "base_model": str(tiny_model)},
    )
    assert response.status_code == 201, response.text
    return "shop"


@pytest.fixture
def catalog(client: TestClient, shop: str) -> str:
    response = client.put(f"/v1/projects/{shop}/items", json={"items": items(CATALOG)})
    assert response.status_code == 200, response.text
    return shop
