"""Bogus API keys cost bounded memory: the key cache holds digests, not keys, and has a cap;
over-long keys are refused unhashed; a client that keeps failing is told to wait (429)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.api.keycache import KeyCache, TtlLru
from fineloop.api.throttle import FailureThrottle
from fineloop.config import MAX_KEY_CHARS, Settings
from fineloop.store import Store

ADMIN_KEY = "memory-test-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def keyed_app(settings: Settings, store: Store, per_minute: int) -> TestClient:
    configured = settings.model_copy(
        update={"api_keys": f"{ADMIN_KEY}:admin", "auth_failures_per_minute": per_minute}
    )
    return TestClient(create_app(configured, store))


@pytest.fixture
def unthrottled(settings: Settings, store: Store) -> Iterator[TestClient]:
    with keyed_app(settings, store, per_minute=0) as client:
        yield client


def key_cache(client: TestClient) -> KeyCache:
    cache: KeyCache = client.app.state.keys  # type: ignore[attr-defined]
    return cache


def test_many_distinct_bogus_keys_leave_the_cache_at_its_cap(
    unthrottled: TestClient, store: Store
) -> None:
    small = KeyCache(store, max_entries=50)
    unthrottled.app.state.keys = small  # type: ignore[attr-defined]  # a cap reached in 200 calls

    for n in range(200):
        bogus = f"{n:06d}" + "x" * (MAX_KEY_CHARS - 6)  # as long as a key may be
        response = unthrottled.get("/v1/projects", headers={"Authorization": f"Bearer {bogus}"})
        assert response.status_code == 401

    assert len(small.scopes) == 50
    assert all(len(digest) == 64 for digest in small.scopes)  # SHA-256 hex, never the key
    assert unthrottled.get("/v1/projects", headers=ADMIN).status_code == 200  # still served


def test_an_over_long_key_is_refused_before_it_is_hashed_or_cached(
    unthrottled: TestClient,
) -> None:
    huge = "k" * 1_000_000

    response = unthrottled.get("/v1/projects", headers={"Authorization": f"Bearer {huge}"})

    assert response.status_code == 401
    assert f"at most {MAX_KEY_CHARS}" in response.json()["message"]
    assert len(key_cache(unthrottled).scopes) == 0


def test_an_over_long_dashboard_cookie_is_refused_too(unthrottled: TestClient) -> None:
    unthrottled.cookies.set("fineloop_key", "c" * 100_000)

    response = unthrottled.get("/v1/projects")

    assert response.status_code == 401
    assert len(key_cache(unthrottled).scopes) == 0


def test_a_client_sending_unknown_keys_gets_429_with_retry_after(
    settings: Settings, store: Store
) -> None:
    with keyed_app(settings, store, per_minute=3) as client:
        for n in range(3):
            bogus = {"Authorization": f"Bearer wrong-{n}"}
            assert client.get("/v1/projects", headers=bogus).status_code == 401

        refused = client.get("/v1/projects", headers={"Authorization": "Bearer wrong-4"})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "auth_failures_per_minute" in refused.json()["message"]
        # Within the minute even a valid key from that address waits: the limit is on the
        # address, so it cannot keep guessing between valid calls.
        assert client.get("/v1/projects", headers=ADMIN).status_code == 429

        elsewhere = TestClient(client.app, client=("10.1.2.3", 4000))
        assert elsewhere.get("/v1/projects", headers=ADMIN).status_code == 200


def test_valid_keys_and_missing_keys_are_not_counted_as_failures(
    settings: Settings, store: Store
) -> None:
    with keyed_app(settings, store, per_minute=2) as client:
        for _ in range(10):
            assert client.get("/v1/projects", headers=ADMIN).status_code == 200
            assert client.get("/v1/projects").status_code == 401  # no key: cheap, not counted
        assert (
            client.get("/v1/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
        )


def test_the_throttle_forgets_the_oldest_clients_past_its_cap() -> None:
    throttle = FailureThrottle(per_minute=1, max_clients=10)

    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")

    assert len(throttle) == 10
    assert throttle.retry_after("10.0.3.231") is not None  # the latest is remembered
    assert throttle.retry_after("10.0.0.0") is None  # the first was forgotten


def test_a_throttle_of_zero_never_refuses() -> None:
    throttle = FailureThrottle(per_minute=0)
    for _ in range(100):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None
    assert len(throttle) == 0


def test_the_cache_evicts_the_least_recently_used_and_expires_entries() -> None:
    cache: TtlLru[str | None] = TtlLru(max_entries=2, ttl=0.2)
    cache.put("a", "admin")
    cache.put("b", None)
    assert cache.get("a") == ("admin",)  # a is now the most recent
    cache.put("c", "ingest")

    assert cache.get("b") is None  # evicted, not a cached "unknown key"
    assert cache.get("a") == ("admin",)
    assert cache.get("c") == ("ingest",)
    time.sleep(0.25)
    assert cache.get("a") is None
    assert len(cache) == 1  # c expired too, but is only dropped when read or evicted


def test_wrong_keys_at_the_dashboard_login_count_too(settings: Settings, store: Store) -> None:
    here = {
        "Origin": "http://testserver",
        "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    with keyed_app(settings, store, per_minute=2) as client:
        statuses = [
            client.post("/login", content=f"key=guess-{n}", headers=here).status_code
            for n in range(3)
        ]
        assert statuses == [401, 401, 429]
        too_long = TestClient(client.app, client=("10.9.9.9", 1))
        refused = too_long.post("/login", content="key=" + "k" * 10_000, headers=here)
        assert refused.status_code == 401
        assert f"at most {MAX_KEY_CHARS}" in refused.text
