"""API keys: open with none, Bearer keys with ingest or admin scope once any exists."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from fineloop import auth
from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.store import Store
from fineloop.store.schema import ApiKey

PATH_VALUES = {
    "project": "faq",
    "resource": "items",
    "feedback_id": "1",
    "interaction_id": "call-1",
    "item_id": "doc-1",
    "key_id": "1",
    "job_id": "1",
    "ref": "champion",
    "snapshot_id": "0" * 64,
}
ADMIN_KEY = "secret1-a-long-random-api-key-0123456789"  # configured keys: 32+ characters
INGEST_KEY = "secret2-a-long-random-api-key-0123456789"
THUMB = {"kind": "thumb", "value": "up", "interaction_id": "call-1"}
CALL = {"id": "call-1", "input": "q", "output": "a"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) for every /v1 operation the app documents."""
    return [
        (method.upper(), path.format(**PATH_VALUES))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in operations
    ]


@pytest.fixture
def configured(settings: Settings, store: Store) -> Iterator[TestClient]:
    """An app started with FINELOOP_API_KEYS-style keys: ADMIN_KEY admin, INGEST_KEY ingest."""
    with_keys = get_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        api_keys=f"{ADMIN_KEY}:admin,{INGEST_KEY}:ingest",
    )
    with TestClient(create_app(with_keys, store)) as test_client:
        test_client.post(
            "/v1/projects", json={"name": "faq", "task": "embedding"}, headers=bearer(ADMIN_KEY)
        )
        yield test_client


def test_without_keys_every_route_is_open(client: TestClient) -> None:
    assert client.post("/v1/projects", json={"name": "faq", "task": "embedding"}).status_code == 201
    assert client.post("/v1/projects/faq/interactions", json=CALL).status_code == 201
    assert client.post("/v1/projects/faq/feedback", json=THUMB).status_code == 201
    assert client.get("/v1/projects/faq/feedback").json()["items"][0]["kind"] == "thumb"
    assert client.get("/v1/keys").json() == []


def test_once_a_key_exists_every_route_but_healthz_needs_one(client: TestClient) -> None:
    created = client.post("/v1/keys", json={"name": "ops", "scope": "admin"})
    assert created.status_code == 201
    routes = v1_routes(client.app)  # type: ignore[arg-type]
    assert len(routes) >= 15

    refused = {(method, path): client.request(method, path).status_code for method, path in routes}

    assert set(refused.values()) == {401}, refused
    assert client.get("/healthz").status_code == 200
    with_key = client.get("/v1/projects", headers=bearer(created.json()["key"]))
    assert with_key.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"Authorization": ADMIN_KEY},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer secret3"},
        {"Authorization": f"Bearer {ADMIN_KEY}x"},
    ],
)
def test_a_missing_or_wrong_key_is_401(configured: TestClient, header: dict[str, str]) -> None:
    response = configured.get("/v1/projects", headers=header)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "Bearer" in response.json()["message"] or "unknown" in response.json()["message"]


def test_an_ingest_key_logs_interactions_and_feedback(configured: TestClient) -> None:
    ingest = bearer(INGEST_KEY)

    call = configured.post("/v1/projects/faq/interactions", json=CALL, headers=ingest)
    calls = configured.post(
        "/v1/projects/faq/interactions/batch",
        json={"interactions": [{"input": "q2", "output": "a2"}]},
        headers=ingest,
    )
    one = configured.post("/v1/projects/faq/feedback", json=THUMB, headers=ingest)
    batch = configured.post(
        "/v1/projects/faq/feedback/batch", json={"events": [THUMB, THUMB]}, headers=ingest
    )

    assert [r.status_code for r in (call, calls, one, batch)] == [201, 201, 201, 201]
    listed = configured.get("/v1/projects/faq/feedback", headers=bearer(ADMIN_KEY)).json()
    assert len(listed["items"]) == 3


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/projects"),
        ("GET", "/v1/projects"),
        ("GET", "/v1/projects/faq"),
        ("PATCH", "/v1/projects/faq"),
        ("GET", "/v1/projects/faq/stats"),
        ("PUT", "/v1/projects/faq/items"),
        ("GET", "/v1/projects/faq/feedback"),
        ("GET", "/v1/projects/faq/interactions"),
        ("GET", "/v1/projects/faq/export/feedback"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
    ],
)
def test_an_ingest_key_is_403_on_admin_routes(
    configured: TestClient, method: str, path: str
) -> None:
    response = configured.request(
        method, path, json={"name": "x", "task": "embedding"}, headers=bearer(INGEST_KEY)
    )

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "ingest" in response.json()["message"]


def test_an_admin_key_can_do_everything(configured: TestClient) -> None:
    admin = bearer(ADMIN_KEY)

    statuses = [
        configured.post(
            "/v1/projects", json={"name": "chat", "task": "fake"}, headers=admin
        ).status_code,
        configured.get("/v1/projects", headers=admin).status_code,
        configured.put(
            "/v1/projects/faq/items", json={"items": [{"id": "d", "text": "t"}]}, headers=admin
        ).status_code,
        configured.post("/v1/projects/faq/interactions", json=CALL, headers=admin).status_code,
        configured.post("/v1/projects/faq/feedback", json=THUMB, headers=admin).status_code,
        configured.get("/v1/projects/faq/feedback", headers=admin).status_code,
        configured.get("/v1/projects/faq/stats", headers=admin).status_code,
        configured.post(
            "/v1/keys", json={"name": "n", "scope": "ingest"}, headers=admin
        ).status_code,
    ]

    assert statuses == [201, 200, 200, 201, 201, 200, 200, 201]


def test_a_revoked_key_is_401(client: TestClient) -> None:
    admin = client.post("/v1/keys", json={"name": "ops", "scope": "admin"}).json()
    ingest = client.post(
        "/v1/keys", json={"name": "app", "scope": "ingest"}, headers=bearer(admin["key"])
    ).json()
    assert client.get("/v1/keys", headers=bearer(ingest["key"])).status_code == 403

    revoked = client.delete(f"/v1/keys/{ingest['id']}", headers=bearer(admin["key"]))

    assert revoked.json()["revoked"] is True
    after = client.post("/v1/projects/faq/feedback", json=THUMB, headers=bearer(ingest["key"]))
    assert after.status_code == 401
    assert "revoked" in after.json()["message"]


def test_revoking_the_last_key_locks_the_server_rather_than_opening_it(
    client: TestClient,
) -> None:
    admin = client.post("/v1/keys", json={"name": "ops", "scope": "admin"}).json()

    client.delete(f"/v1/keys/{admin['id']}", headers=bearer(admin["key"]))

    assert client.get("/v1/projects", headers=bearer(admin["key"])).status_code == 401
    assert client.get("/v1/projects").status_code == 401
    assert client.post("/v1/keys", json={"name": "me", "scope": "admin"}).status_code == 401


def test_a_key_revoked_by_another_process_stops_working_once_the_cache_forgets(
    client: TestClient, store: Store
) -> None:
    admin = client.post("/v1/keys", json={"name": "ops", "scope": "admin"}).json()
    ingest = client.post(
        "/v1/keys", json={"name": "app", "scope": "ingest"}, headers=bearer(admin["key"])
    ).json()
    assert (
        client.post(
            "/v1/projects/x/feedback", json=THUMB, headers=bearer(ingest["key"])
        ).status_code
        == 404
    )  # known key, no project

    with store.write() as session:  # what `fineloop keys revoke` does
        auth.revoke_key(session, ingest["id"])
    client.app.state.keys.forget()  # type: ignore[attr-defined]  # the 5-second cache, expired

    refused = client.post("/v1/projects/x/feedback", json=THUMB, headers=bearer(ingest["key"]))
    assert refused.status_code == 401


def test_a_new_app_on_the_same_store_sees_revocations_at_once(
    settings: Settings, store: Store, client: TestClient
) -> None:
    admin = client.post("/v1/keys", json={"name": "ops", "scope": "admin"}).json()
    assert client.get("/v1/projects", headers=bearer(admin["key"])).status_code == 200
    with store.write() as session:
        auth.revoke_key(session, admin["id"])

    with TestClient(create_app(settings, store)) as fresh:
        assert fresh.get("/v1/projects", headers=bearer(admin["key"])).status_code == 401


def all_stored_text(store: Store) -> str:
    with store.read() as session:
        rows = session.execute(select(ApiKey.__table__)).all()
    return repr(rows)


def test_created_keys_are_stored_only_as_hashes(client: TestClient, store: Store) -> None:
    created = client.post("/v1/keys", json={"name": "ops", "scope": "admin"}).json()
    secret = created["key"]

    stored = all_stored_text(store)
    listed = client.get("/v1/keys", headers=bearer(secret)).text

    assert secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert secret not in listed
    assert "key_hash" not in listed
    assert secret.startswith(created["prefix"])


def test_configured_keys_are_stored_only_as_hashes(configured: TestClient, store: Store) -> None:
    stored = all_stored_text(store)

    for secret in (ADMIN_KEY, INGEST_KEY):
        assert secret not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() in stored


def test_a_configured_key_with_an_unknown_scope_stops_the_start(
    settings: Settings, store: Store
) -> None:
    bad = settings.model_copy(update={"api_keys": "secret1:root"})

    with pytest.raises(ValueError, match="KEY:admin"):
        create_app(bad, store)
