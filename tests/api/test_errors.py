"""What the API says when a request is wrong: a 4xx JSON body naming the field, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.store import Store
from fineloop.store.schema import Feedback

SHOWN = {"items": [{"id": "reset"}, {"id": "refund"}, {"id": "invoice"}]}


@pytest.fixture
def ranking(client: TestClient, project: str) -> str:
    response = client.post(
        f"/v1/projects/{project}/interactions",
        json={"id": "call-1", "input": "forgot password", "output": SHOWN},
    )
    assert response.status_code == 201
    return "call-1"


def stored_feedback(store: Store) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(Feedback)) or 0


def rejected(response: Any, status: int, field: str) -> dict[str, Any]:
    """Assert the response is the documented error shape, naming `field`; return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str)
    assert field in body["message"], body["message"]
    return body


def test_feedback_for_an_unknown_project_is_404(client: TestClient) -> None:
    for path in ("/v1/projects/nope/feedback", "/v1/projects/nope/feedback/batch"):
        event = {"kind": "thumb", "value": "up", "input": "q"}
        body = event if path.endswith("feedback") else {"events": [event]}

        response = client.post(path, json=body)

        assert rejected(response, 404, "nope")["error"] == "not_found"


def test_an_unknown_kind_is_422_on_kind(client: TestClient, project: str) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback", json={"kind": "smile", "value": "up", "input": "q"}
    )

    body = rejected(response, 422, "kind")
    assert body["errors"][0]["field"] == "kind"
    assert "thumb" in body["message"]  # lists the kinds there are


def test_a_missing_kind_is_422_on_kind(client: TestClient, project: str) -> None:
    response = client.post(f"/v1/projects/{project}/feedback", json={"value": "up", "input": "q"})

    assert rejected(response, 422, "kind")["errors"][0]["field"] == "kind"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"kind": "thumb", "value": 3}, "value"),
        ({"kind": "thumb"}, "value"),
        ({"kind": "thumb", "value": "up", "vlaue": "typo"}, "vlaue"),
        ({"kind": "rating", "value": "five"}, "value"),
        ({"kind": "correction", "output": ""}, "corrected output"),
        ({"kind": "selection"}, "selected or rejected"),
        ({"kind": "selection", "selected": ["a"], "rejected": ["a"]}, "both selected and rejected"),
        ({"kind": "preference", "chosen": "a"}, "rejected"),
        (
            {"kind": "preference", "chosen": "a", "chosen_interaction_id": "x", "rejected": "b"},
            "chosen or chosen_interaction_id",
        ),
        ({"kind": "label"}, "label, spans or items"),
        ({"kind": "label", "spans": [{"start": 5, "end": 2, "label": "X"}]}, "span end"),
        ({"kind": "thumb", "value": "up", "difficulty": 2}, "difficulty"),
        ({"kind": "thumb", "value": "up", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_a_payload_that_does_not_fit_its_kind_is_422(
    client: TestClient, store: Store, project: str, event: dict[str, Any], field: str
) -> None:
    response = client.post(f"/v1/projects/{project}/feedback", json={**event, "input": "q"})

    assert rejected(response, 422, field)["error"] == "invalid"
    assert stored_feedback(store) == 0


def test_a_rating_off_the_scale_is_422_naming_the_scale(client: TestClient, project: str) -> None:
    url = f"/v1/projects/{project}/feedback"

    too_high = client.post(url, json={"kind": "rating", "value": 6, "input": "q"})
    client.patch(
        f"/v1/projects/{project}", json={"reward_policy": {"rating_scale": {"min": 0, "max": 10}}}
    )
    now_fine = client.post(url, json={"kind": "rating", "value": 6, "input": "q"})
    too_low = client.post(url, json={"kind": "rating", "value": -1, "input": "q"})

    assert "1..5" in rejected(too_high, 422, "value")["message"]
    assert now_fine.status_code == 201
    assert "0..10" in rejected(too_low, 422, "value")["message"]


def test_feedback_on_an_unknown_interaction_is_422(client: TestClient, project: str) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "thumb", "value": "up", "interaction_id": "never-logged"},
    )

    body = rejected(response, 422, "interaction_id")
    assert "never-logged" in body["message"]
    assert body["invalid_rows"][0]["field"] == "interaction_id"


def test_an_interaction_of_another_project_is_unknown_here(
    client: TestClient, project: str
) -> None:
    client.post("/v1/projects", json={"name": "other", "task": "fake"})
    client.post("/v1/projects/other/interactions", json={"id": "theirs", "input": 1, "output": 2})

    response = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "thumb", "value": "up", "interaction_id": "theirs"},
    )

    rejected(response, 422, "interaction_id")


def test_feedback_about_nothing_is_422(client: TestClient, project: str) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback", json={"kind": "thumb", "value": "up"}
    )

    rejected(response, 422, "interaction_id")


def test_a_selection_of_items_never_shown_is_422(
    client: TestClient, project: str, ranking: str
) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "selection", "interaction_id": ranking, "selected": ["reset", "pricing"]},
    )

    body = rejected(response, 422, "selected")
    assert "pricing" in body["message"]
    assert "'reset'" not in body["message"]


def test_a_timestamp_in_the_future_is_422(client: TestClient, project: str) -> None:
    url = f"/v1/projects/{project}/feedback"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    a_minute_ahead = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()

    future = client.post(
        url, json={"kind": "thumb", "value": "up", "input": "q", "timestamp": tomorrow}
    )
    skewed = client.post(
        url, json={"kind": "thumb", "value": "up", "input": "q", "timestamp": a_minute_ahead}
    )

    assert "future" in rejected(future, 422, "timestamp")["message"]
    assert skewed.status_code == 201  # a client clock a little fast is tolerated


def test_a_timestamp_that_leaves_the_calendar_in_utc_is_422(
    client: TestClient, project: str
) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "thumb", "value": "up", "input": "q", "timestamp": "0001-01-01T00:00+05:00"},
    )

    rejected(response, 422, "timestamp")


@pytest.fixture
def small_client(settings: Settings, store: Store) -> Iterator[TestClient]:
    small = settings.model_copy(update={"max_request_bytes": 2_000})
    with TestClient(create_app(small, store)) as test_client:
        assert test_client.post("/v1/projects", json={"name": "faq", "task": "embedding"})
        yield test_client


def test_a_body_over_max_request_bytes_is_413(small_client: TestClient, store: Store) -> None:
    url = "/v1/projects/faq/feedback"

    fits = small_client.post(url, json={"kind": "thumb", "value": "up", "input": "q" * 1_500})
    too_big = small_client.post(url, json={"kind": "thumb", "value": "up", "input": "q" * 2_500})

    assert fits.status_code == 201
    body = rejected(too_big, 413, "2000 bytes")
    assert body["error"] == "too_large"
    assert stored_feedback(store) == 1


def test_a_streamed_body_over_the_limit_is_413_too(small_client: TestClient, store: Store) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server has to count
        yield b'{"kind": "thumb", "value": "up", "input": "'
        for _ in range(10):
            yield b"q" * 500
        yield b'"}'

    response = small_client.post(
        "/v1/projects/faq/feedback", content=chunks(), headers={"content-type": "application/json"}
    )

    assert rejected(response, 413, "bytes")["error"] == "too_large"
    assert stored_feedback(store) == 0


def test_more_than_ten_thousand_events_in_a_batch_is_422(
    client: TestClient, store: Store, project: str
) -> None:
    events = [{"kind": "thumb", "value": "up", "input": "q"}] * 10_001

    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})

    assert "10000" in rejected(response, 422, "events")["message"]
    assert stored_feedback(store) == 0


def test_an_empty_batch_is_422(client: TestClient, project: str) -> None:
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": []})

    rejected(response, 422, "events")


def test_malformed_json_is_422_on_the_body(client: TestClient, project: str) -> None:
    response = client.post(
        f"/v1/projects/{project}/feedback",
        content=b'{"kind": "thumb", "value": up}',
        headers={"content-type": "application/json"},
    )

    body = rejected(response, 422, "body")
    assert "JSON" in body["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422_on_every_backend_and_store_nothing(
    client: TestClient, project: str, store: Store, constant: str
) -> None:
    """JSON has no NaN or Infinity; Python's parser accepts them, SQLite would store them
    (as null) and PostgreSQL refuse them, so they are refused before either sees them."""
    headers = {"content-type": "application/json"}
    cases = [
        (f"/v1/projects/{project}/items", '{"items": [{"id": "a", "text": "t", '
         '"metadata": {"w": %s}}]}'),
        (f"/v1/projects/{project}/interactions", '{"id": "c", "input": [1, %s], "output": {}}'),
        (f"/v1/projects/{project}/feedback", '{"kind": "thumb", "input": "q", "up": true, '
         '"metadata": {"score": %s}}'),
    ]  # fmt: skip
    for path, body in cases:
        send = client.put if path.endswith("/items") else client.post
        response = send(path, content=body % constant, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert "finite" in response.json()["message"], response.text
    assert stored_feedback(store) == 0
    assert client.get(f"/v1/projects/{project}/items").json()["items"] == []


def test_a_validator_message_reaches_the_user_without_pydantic_prefix(
    client: TestClient, project: str
) -> None:
    answer = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "selection", "input": "q", "selected": [], "rejected": []},
    )
    assert answer.status_code == 422, answer.text
    message = answer.json()["errors"][0]["message"]
    assert message == "a selection needs at least one selected or rejected item id"
    assert "Value error" not in answer.text
