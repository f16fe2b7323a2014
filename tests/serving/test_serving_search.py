"""search: ranks a project's items for a query, logs what it showed, honours filters, and
follows item upserts at once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fineloop.registry.versions import CHAMPION
from fineloop.serving import get_serving
from fineloop.store import Store
from fineloop.store.schema import Alias, ModelVersion
from fineloop.tasks.embedding.serving.state import embedding_serving
from serving.helpers import CATALOG, ids, search

OBVIOUS = {
    "reset my password": "reset",
    "my card is stolen": "card",
    "refund for a payment": "refund",
    "cancel the subscription": "cancel",
    "invite a colleague": "invite",
    "export data to a file": "export",
}


def test_the_obviously_right_item_ranks_first(client: TestClient, catalog: str) -> None:
    for query, expected in OBVIOUS.items():
        body = search(client, catalog, query, k=3)
        assert ids(body)[0] == expected, (query, body["items"])
        assert [hit["rank"] for hit in body["items"]] == [1, 2, 3]
        scores = [hit["score"] for hit in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= hit["probability"] <= 1 for hit in body["items"])


def test_each_search_logs_its_interaction(client: TestClient, catalog: str) -> None:
    body = search(client, catalog, "reset my password", k=4, user_id="u-7")

    logged = client.get(f"/v1/projects/{catalog}/interactions/{body['interaction_id']}").json()
    assert logged["input"] == "reset my password"
    assert logged["model_version"] == body["model_version"] == "v0"
    assert logged["user_id"] == "u-7"
    assert logged["latency_ms"] > 0
    shown = logged["output"]["items"]
    assert [(s["id"], s["rank"], s["score"], s["probability"]) for s in shown] == [
        (h["id"], h["rank"], h["score"], h["probability"]) for h in body["items"]
    ]
    assert logged["output"]["mode"] == "search"


def test_first_search_registers_the_base_model_as_v0_champion(
    client: TestClient, catalog: str, store: Store, tiny_model: object
) -> None:
    search(client, catalog, "refund")
    search(client, catalog, "refund")

    with store.read() as session:
        versions = list(session.scalars(select(ModelVersion)))
        aliases = list(session.scalars(select(Alias)))
    assert [(v.number, v.artifact_uri) for v in versions] == [(0, str(tiny_model))]
    assert [(a.name, a.version_id) for a in aliases] == [(CHAMPION, versions[0].id)]


def test_filters_are_exact_on_metadata(client: TestClient, catalog: str) -> None:
    everything = search(client, catalog, "refund for my account", k=100)
    assert len(everything["items"]) == len(CATALOG)
    section = {key: meta["section"] for key, _, meta in CATALOG}

    account = search(client, catalog, "refund for my account", k=3, filters={"section": "account"})
    either = search(
        client, catalog, "refund for my account", k=100, filters={"section": ["team", "cards"]}
    )
    nothing = search(client, catalog, "refund", filters={"section": "missing"})

    ranked = ids(everything)
    assert ids(account) == [i for i in ranked if section[i] == "account"][:3]
    assert ids(either) == [i for i in ranked if section[i] in ("team", "cards")]
    assert nothing["items"] == []


def test_an_upserted_item_is_found_and_an_edited_text_moves(
    client: TestClient, catalog: str
) -> None:
    assert ids(search(client, catalog, "my card is lost or stolen", k=1)) == ["card"]

    client.put(
        f"/v1/projects/{catalog}/items",
        json={
            "items": [
                {"id": "roof", "text": "the roof and the stair", "metadata": {"section": "x"}},
                {"id": "card", "text": "window door floor beam column", "metadata": {}},
            ]
        },
    )

    assert ids(search(client, catalog, "the roof and the stair", k=1)) == ["roof"]
    after = ids(search(client, catalog, "my card is lost or stolen", k=100))
    assert after[0] != "card"
    assert ids(search(client, catalog, "window door floor beam", k=1)) == ["card"]
    # metadata follows too: the edited card lost its section
    cards = search(client, catalog, "card", filters={"section": "cards"})
    assert cards["items"] == []


def test_search_on_a_project_without_items_says_to_upsert(client: TestClient, shop: str) -> None:
    response = client.post(f"/v1/projects/{shop}/search", json={"query": "refund"})

    assert response.status_code == 422
    assert "no items" in response.json()["message"]
    assert f"PUT /v1/projects/{shop}/items" in response.json()["message"]
    client.put(f"/v1/projects/{shop}/items", json={"items": [{"id": "a", "text": "refund"}]})
    assert ids(search(client, shop, "refund")) == ["a"]


@pytest.mark.parametrize("version", ["v7", "7", "staging"])
def test_unknown_version_or_alias_is_404(client: TestClient, catalog: str, version: str) -> None:
    response = client.post(
        f"/v1/projects/{catalog}/search", json={"query": "refund", "version": version}
    )

    assert response.status_code == 404
    assert repr(version) in response.json()["message"]


def test_query_over_the_length_limit_is_422(client: TestClient, catalog: str) -> None:
    client.patch(f"/v1/projects/{catalog}", json={"serving_policy": {"max_query_chars": 20}})

    response = client.post(f"/v1/projects/{catalog}/search", json={"query": "refund " * 10})

    assert response.status_code == 422
    assert response.json()["field"] == "query"
    assert "at most 20" in response.json()["message"]
    assert client.post(f"/v1/projects/{catalog}/search", json={"query": "refund"}).is_success


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "refund", "k": 0}, "k"),
        ({"query": "refund", "k": 101}, "k"),
        ({"query": "refund", "colour": "red"}, "colour"),
    ],
)
def test_malformed_requests_name_the_field(
    client: TestClient, catalog: str, body: dict[str, object], field: str
) -> None:
    response = client.post(f"/v1/projects/{catalog}/search", json=body)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_non_embedding_and_unknown_projects(client: TestClient) -> None:
    client.post("/v1/projects", json={"name": "chat", "task": "fake"})

    chat = client.post("/v1/projects/chat/search", json={"query": "hello"})
    missing = client.post("/v1/projects/nope/search", json={"query": "hello"})

    assert chat.status_code == 422
    assert "'fake' project" in chat.json()["message"]
    assert missing.status_code == 404


def test_feedback_naming_items_not_shown_is_rejected(client: TestClient, catalog: str) -> None:
    body = search(client, catalog, "reset my password", k=2)
    unseen = next(key for key, _, _ in CATALOG if key not in ids(body))

    response = client.post(
        f"/v1/projects/{catalog}/feedback",
        json={"kind": "selection", "interaction_id": body["interaction_id"], "selected": [unseen]},
    )

    assert response.status_code == 422
    assert "not shown" in response.json()["message"]


def test_a_base_model_that_cannot_load_is_a_clear_4xx(client: TestClient, tmp_path: Path) -> None:
    broken = tmp_path / "not-a-model"  # under the models root, but no model in it
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    created = client.post(
        "/v1/projects",
        json={"name": "broken", "task": "embedding", "base_model": str(broken)},
    )
    assert created.status_code == 201, created.text
    client.put("/v1/projects/broken/items", json={"items": [{"id": "a", "text": "refund"}]})

    response = client.post("/v1/projects/broken/search", json={"query": "refund"})

    assert response.status_code == 422
    assert f"cannot load the model of v0 from '{broken}'" in response.json()["message"]


def test_a_bulk_upsert_is_indexed_in_the_background_without_waiting_for_a_search(
    client: TestClient, catalog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(search(client, catalog, "refund", k=100)["items"])
    (slot,) = embedding_serving(client.app)._slots.values()
    encode = slot.catalog.encoder.encode

    def slow_encode(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        time.sleep(0.2)  # long enough for the next upserts to arrive meanwhile
        return encode(texts, batch_size)

    monkeypatch.setattr(slot.catalog.encoder, "encode", slow_encode)
    for batch in range(3):  # the later ones arrive while the first is being embedded
        bulk = [{"id": f"b{batch}-{n}", "text": f"part {n} of roof {batch}"} for n in range(300)]
        client.put(f"/v1/projects/{catalog}/items", json={"items": bulk})

    get_serving(client.app).background.join()  # no search in between: the upsert started it
    (champion,) = client.get(f"/v1/projects/{catalog}/index").json()["versions"]

    assert champion["items_indexed"] == champion["items_total"] == before + 900
    assert champion["catching_up"] is False and champion["progress"] == 1.0


def test_bulk_upserts_and_file_imports_are_embedded_in_the_background(
    client: TestClient, catalog: str
) -> None:
    search(client, catalog, "refund")
    words = ["roof", "beam", "stair", "column", "floor", "window", "door"]
    bulk = [
        {"id": f"bulk-{n}", "text": f"{words[n % 7]} {words[(n // 7) % 7]} {words[n // 49]}"}
        for n in range(300)
    ]
    client.put(f"/v1/projects/{catalog}/items", json={"items": bulk})
    client.post(
        f"/v1/projects/{catalog}/import/items?format=jsonl",
        content=b'{"id": "imported", "text": "where is the wall"}\n',
    )

    search(client, catalog, "refund")  # notices both, queues the catch-up
    get_serving(client.app).background.join()

    assert ids(search(client, catalog, "where is the wall", k=1)) == ["imported"]
    assert ids(search(client, catalog, "door column window", k=1)) == ["bulk-272"]
