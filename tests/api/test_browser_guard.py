"""A web page the user visits cannot use the server through their browser: not by posting
text or forms from another site (no CORS preflight is needed for those), not through DNS
rebinding. Clients that are not browsers (SDK, curl) and the dashboard's own pages still
work, in open mode and with keys."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.store import Store

ITEMS = b'{"id": "doc-1", "text": "How do I reset my password?"}\n'
IMPORT = "/v1/projects/faq/import/items?format=jsonl"
EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
HERE = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
THUMB = {"kind": "thumb", "value": "up", "input": "q"}
ADMIN_KEY = "guard-test-admin-key-0123456789abcdefgh"


def stored_items(client: TestClient) -> list[object]:
    items: list[object] = client.get("/v1/projects/faq/items").json()["items"]
    return items


def app_with(settings: Settings, store: Store, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update), store))


# --- cross-site changes -----------------------------------------------------------------


def test_a_cross_site_text_post_to_an_import_is_refused_and_stores_nothing(
    client: TestClient, project: str
) -> None:
    response = client.post(IMPORT, content=ITEMS, headers={**EVIL, "Content-Type": "text/plain"})

    assert response.status_code == 403
    assert response.json()["error"] == "cross_site"
    assert "Sec-Fetch-Site: cross-site" in response.json()["message"]
    assert stored_items(client) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},  # an older browser: Origin only
        {"Origin": "http://testserver:3000"},  # another port of the same host
        {"Origin": "null"},  # a sandboxed frame or a local file
        {"Sec-Fetch-Site": "same-site", "Origin": "http://app.testserver"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["origin", "other-port", "null", "same-site", "fetch-site"],
)
def test_every_sign_of_another_site_refuses_a_change(
    client: TestClient, project: str, headers: dict[str, str]
) -> None:
    feedback = client.post("/v1/projects/faq/feedback", json=THUMB, headers=headers)
    cancel = client.post("/v1/jobs/1/cancel", headers=headers)
    end_rollout = client.delete("/v1/projects/faq/rollout", headers=headers)

    assert [feedback.status_code, cancel.status_code, end_rollout.status_code] == [403] * 3
    assert client.get("/v1/projects/faq/feedback").json()["items"] == []


def test_reads_from_another_site_are_left_to_the_browser(client: TestClient, project: str) -> None:
    # Without CORS headers the browser does not let the page read the answer; the Host
    # check stops the rebinding that would make it same-origin.
    assert client.get("/v1/projects", headers=EVIL).status_code == 200


def test_a_client_that_is_not_a_browser_passes(client: TestClient, project: str) -> None:
    assert client.post("/v1/projects/faq/feedback", json=THUMB).status_code == 201
    imported = client.post(IMPORT, content=ITEMS)  # the SDK streams files with no type
    assert imported.status_code == 200, imported.text
    assert len(stored_items(client)) == 1


def test_the_dashboards_own_calls_pass(client: TestClient, project: str) -> None:
    response = client.post("/v1/projects/faq/feedback", json=THUMB, headers=HERE)
    assert response.status_code == 201
    behind_a_proxy = {"Origin": "https://testserver"}  # TLS ended in front: Host has no port
    assert (
        client.post("/v1/projects/faq/feedback", json=THUMB, headers=behind_a_proxy).status_code
        == 201
    )


# --- content types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_a_json_route_takes_only_json(
    client: TestClient, project: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/projects/faq/feedback", content=json.dumps(THUMB), headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert "Content-Type: application/json" in response.json()["message"]
    assert client.get("/v1/projects/faq/feedback").json()["items"] == []


def test_json_with_a_charset_or_a_json_suffix_is_json(client: TestClient, project: str) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post(
            "/v1/projects/faq/feedback",
            content=json.dumps(THUMB),
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 201, (content_type, response.text)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_an_import_refuses_what_a_form_can_send(
    client: TestClient, project: str, content_type: str
) -> None:
    response = client.post(IMPORT, content=ITEMS, headers={"Content-Type": content_type})

    assert response.status_code == 415
    assert "application/x-ndjson" in response.json()["message"]
    assert stored_items(client) == []


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/octet-stream"])
def test_an_import_takes_its_file_types(
    client: TestClient, project: str, content_type: str
) -> None:
    response = client.post(IMPORT, content=ITEMS, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text


def test_an_empty_change_needs_no_content_type(client: TestClient, project: str) -> None:
    assert client.post("/v1/jobs/99/cancel").status_code == 404  # reached the route


# --- host names --------------------------------------------------------------------------


def test_a_rebound_host_name_is_refused(client: TestClient, project: str) -> None:
    for method, path in (("GET", "/v1/projects"), ("GET", "/"), ("POST", IMPORT)):
        response = client.request(
            method, path, content=ITEMS, headers={"Host": "evil.example:8000"}
        )
        assert response.status_code == 400, (method, path)
        assert response.json()["error"] == "host_not_allowed"
        assert "FINELOOP_ALLOWED_HOSTS" in response.json()["message"]
    assert stored_items(client) == []


@pytest.mark.parametrize(
    "host", ["localhost:8000", "LOCALHOST", "127.0.0.1:8000", "[::1]:8000", "192.168.1.20:8000"]
)
def test_local_names_and_addresses_are_answered_by_default(
    settings: Settings, store: Store, host: str
) -> None:
    with app_with(settings, store, allowed_hosts="") as client:
        assert client.get("/v1/projects", headers={"Host": host}).status_code == 200
        assert client.get("/v1/projects").status_code == 400  # testserver: not by default


def test_allowed_hosts_adds_names_and_star_allows_any(settings: Settings, store: Store) -> None:
    with app_with(settings, store, allowed_hosts="fineloop.example.com, other.example") as named:
        ok = named.get("/healthz", headers={"Host": "fineloop.example.com:443"})
        assert ok.status_code == 200
        assert named.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
    with app_with(settings, store, allowed_hosts="*") as anything:
        assert anything.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


def test_an_own_origin_under_a_refused_host_is_still_refused(
    client: TestClient, project: str
) -> None:
    # DNS rebinding makes the page same-origin with evil.example: the Host check catches it.
    rebound = {
        "Host": "evil.example",
        "Origin": "http://evil.example",
        "Sec-Fetch-Site": "same-origin",
    }
    assert client.post("/v1/projects/faq/feedback", json=THUMB, headers=rebound).status_code == 400


# --- with keys: the dashboard's cookie ----------------------------------------------------


@pytest.fixture
def keyed(settings: Settings, store: Store) -> Iterator[TestClient]:
    with app_with(settings, store, api_keys=f"{ADMIN_KEY}:admin") as client:
        client.post(
            "/v1/projects",
            json={"name": "faq", "task": "embedding"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        yield client


def test_the_dashboard_login_form_and_its_calls_work_from_its_own_pages(
    keyed: TestClient,
) -> None:
    login = keyed.post(
        "/login",
        content=f"key={ADMIN_KEY}&next=/projects/faq",
        headers={**HERE, "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    assert keyed.cookies.get("fineloop_key") == ADMIN_KEY

    assert keyed.post("/v1/projects/faq/feedback", json=THUMB, headers=HERE).status_code == 201


def test_with_a_cookie_a_cross_site_change_is_still_refused(keyed: TestClient) -> None:
    keyed.cookies.set("fineloop_key", ADMIN_KEY)

    response = keyed.post(IMPORT, content=ITEMS, headers={**EVIL, "Content-Type": "text/plain"})

    assert response.status_code == 403
    listed = keyed.get("/v1/projects/faq/items", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert listed.json()["items"] == []


def test_a_cross_site_login_form_is_refused(keyed: TestClient) -> None:
    response = keyed.post(
        "/login",
        content=f"key={ADMIN_KEY}",
        headers={**EVIL, "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert keyed.cookies.get("fineloop_key") is None
