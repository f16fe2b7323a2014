"""With API keys, the dashboard needs an admin key: a login form puts it in an HttpOnly,
SameSite=Strict cookie, which the JSON API accepts too, but only from the server's own pages.
The Authorization header works exactly as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.store import Store

ADMIN, INGEST = "admin-secret-1-0123456789abcdefghij", "ingest-secret-2-0123456789abcdefghij"
HERE = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
PROJECT = {"name": "faq", "task": "embedding"}


@pytest.fixture
def keyed(settings: Settings, store: Store) -> Iterator[TestClient]:
    with_keys = get_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        api_keys=f"{ADMIN}:admin,{INGEST}:ingest",
    )
    with TestClient(create_app(with_keys, store)) as client:
        yield client


def log_in(client: TestClient, key: str, headers: dict[str, str] | None = None) -> int:
    response = client.post(
        "/login",
        content=f"key={key}&next=/projects/faq",
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or HERE)},
        follow_redirects=False,
    )
    return response.status_code


def test_pages_send_a_stranger_to_the_login_form(keyed: TestClient) -> None:
    for path in ("/", "/projects/faq", "/jobs/1"):
        response = keyed.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"
    form = keyed.get("/login?next=/projects/faq")
    assert form.status_code == 200 and 'value="/projects/faq"' in form.text


def test_only_an_admin_key_logs_in_and_the_cookie_is_httponly_strict(keyed: TestClient) -> None:
    assert log_in(keyed, "wrong") == 401
    assert log_in(keyed, INGEST) == 403
    assert (
        "the dashboard needs an admin key"
        in keyed.post("/login", content=f"key={INGEST}", headers=HERE).text
    )
    assert keyed.cookies.get("fineloop_key") is None
    response = keyed.post(
        "/login", content=f"key={ADMIN}&next=/projects/faq", headers=HERE, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/projects/faq"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert keyed.get("/").status_code == 200


def test_a_login_posted_from_another_site_sets_nothing(keyed: TestClient) -> None:
    assert log_in(keyed, ADMIN, {"Origin": "http://evil.example"}) == 403
    assert log_in(keyed, ADMIN, {"Sec-Fetch-Site": "cross-site"}) == 403
    assert keyed.cookies.get("fineloop_key") is None


def test_after_login_only_local_paths_are_followed(keyed: TestClient) -> None:
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example", "/")):
        response = keyed.post(
            "/login", content=f"key={ADMIN}&next={target}", headers=HERE, follow_redirects=False
        )
        assert response.headers["location"] == expected


def test_the_cookie_opens_the_api_only_for_requests_from_the_dashboard(
    keyed: TestClient,
) -> None:
    assert log_in(keyed, ADMIN) == 303
    # Reads: from the dashboard's pages, or typed in the address bar.
    assert keyed.get("/v1/projects", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert keyed.get("/v1/projects", headers={"Sec-Fetch-Site": "none"}).status_code == 200
    # Another site, or another port of this host (same site, other origin): no.
    for foreign in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://testserver:9999"},
        {"Origin": "http://evil.example"},
    ):
        assert keyed.get("/v1/projects", headers=foreign).status_code == 401, foreign
        # Changes from another site are refused before the cookie is even read.
        assert keyed.post("/v1/projects", json=PROJECT, headers=foreign).status_code == 403
    # A change must say where it comes from.
    assert keyed.post("/v1/projects", json=PROJECT).status_code == 401
    assert keyed.post("/v1/projects", json=PROJECT, headers=HERE).status_code == 201
    assert keyed.get("/projects/faq").status_code == 200


def test_the_header_still_decides_when_it_is_sent(keyed: TestClient) -> None:
    assert log_in(keyed, ADMIN) == 303
    ingest = {"Authorization": f"Bearer {INGEST}", **HERE}
    assert keyed.post("/v1/projects", json=PROJECT, headers=ingest).status_code == 403
    wrong = {"Authorization": "Bearer nope", **HERE}
    assert keyed.get("/v1/projects", headers=wrong).status_code == 401
    keyed.cookies.clear()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert keyed.post("/v1/projects", json=PROJECT, headers=admin).status_code == 201


def test_logging_out_clears_the_cookie(keyed: TestClient) -> None:
    assert log_in(keyed, ADMIN) == 303
    response = keyed.post("/logout", headers=HERE, follow_redirects=False)
    assert response.headers["location"] == "/login"
    assert keyed.cookies.get("fineloop_key") is None
    assert keyed.get("/", follow_redirects=False).status_code == 303


def test_without_keys_there_is_no_login(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    response = client.get("/login?next=/projects/x", follow_redirects=False)
    assert response.headers["location"] == "/projects/x"
    assert "Log out" not in client.get("/").text
