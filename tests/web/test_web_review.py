"""The review page: the queue's first interaction drawn on the server (input, the shown items
with their catalog text), the rest in the page's data for its script, and answers stored
as ordinary feedback through the API, after which the interaction leaves the queue."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient


def page_data(html: str) -> dict[str, Any]:
    """The JSON the page's script draws from."""
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, html[:500]
    data: dict[str, Any] = json.loads(found.group(1))
    return data


ITEMS = [
    {"id": "refund", "text": "How to get your money back"},
    {"id": "card", "text": "Order a new card"},
    {"id": "pin", "text": "Reset a <b>PIN</b>"},
]


def shown(*scores: float) -> dict[str, Any]:
    """A search output; the closer its scores, the less sure the model was."""
    return {
        "mode": "search",
        "items": [
            {"id": item["id"], "score": s, "probability": round(s, 2), "rank": i + 1}
            for i, (item, s) in enumerate(zip(ITEMS, scores, strict=False))
        ],
    }


def fill(client: TestClient, project: str) -> None:
    assert client.put(f"/v1/projects/{project}/items", json={"items": ITEMS}).status_code == 200
    rows = [
        {"id": "confident", "input": "lost card", "output": shown(0.98, 0.02)},
        {"id": "unsure", "input": "money <script>back</script>", "output": shown(0.49, 0.48)},
        {"id": "text", "input": "say hi", "output": {"text": "hello"}},
    ]
    response = client.post(
        f"/v1/projects/{project}/interactions/batch", json={"interactions": rows}
    )
    assert response.status_code == 201, response.text


def test_the_review_page_shows_the_most_uncertain_interaction_first(
    client: TestClient, project: str
) -> None:
    fill(client, project)
    response = client.get(f"/projects/{project}/review")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    html = response.text
    first = html.split('id="review-item"', 1)[1]
    assert 'data-interaction="unsure"' in html
    assert "money &lt;script&gt;back&lt;/script&gt;" in first  # the input, escaped
    assert "<script>back" not in html
    assert "How to get your money back" in first and "Reset a &lt;b&gt;PIN" not in first
    assert 'data-action="pick" data-n="2"' in first and 'data-action="reject"' in first
    assert "/static/review.js" in html
    data = page_data(html)
    assert [i["id"] for i in data["items"]] == ["unsure", "confident", "text"]
    unsure, _, text = data["items"]
    assert unsure["actions"] == "selection" and [s["id"] for s in unsure["shown"]] == [
        "refund",
        "card",
    ]
    assert unsure["shown"][0]["probability"] == 0.49
    assert text["actions"] == "thumb" and text["output"] == '{"text": "hello"}'
    assert data["ranking"] == "uncertainty"  # the project's review policy


def test_answers_are_ordinary_feedback_and_leave_the_queue(
    client: TestClient, project: str
) -> None:
    """The events review.js sends, sent the same way: keyed, so a second press is no
    second event."""
    fill(client, project)
    pick = {
        "kind": "selection",
        "selected": ["card"],
        "interaction_id": "unsure",
        "idempotency_key": "review:unsure:pick2",
        "metadata": {"source": "review page", "reason": "uncertainty"},
    }
    origin = {"Origin": "http://testserver"}
    first = client.post(f"/v1/projects/{project}/feedback", json=pick, headers=origin)
    again = client.post(f"/v1/projects/{project}/feedback", json=pick, headers=origin)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    down = {"kind": "thumb", "value": "down", "interaction_id": "text"}
    assert client.post(f"/v1/projects/{project}/feedback", json=down).status_code == 201
    unseen = {"kind": "selection", "selected": ["pin"], "interaction_id": "confident"}
    refused = client.post(f"/v1/projects/{project}/feedback", json=unseen)
    assert refused.status_code == 422 and "not shown" in refused.text  # the same checks
    data = page_data(client.get(f"/projects/{project}/review").text)
    assert [i["id"] for i in data["items"]] == ["confident"]
    stored = client.get(f"/v1/projects/{project}/feedback").json()["items"]
    assert {e["kind"] for e in stored} == {"selection", "thumb"} and len(stored) == 2


def test_the_ranking_can_be_chosen_on_the_page_and_the_project_links_to_it(
    client: TestClient, project: str
) -> None:
    fill(client, project)
    data = page_data(client.get(f"/projects/{project}/review?ranking=recent").text)
    assert data["ranking"] == "recent"
    nonsense = page_data(client.get(f"/projects/{project}/review?ranking=%3Cb%3E").text)
    assert nonsense["ranking"] == "uncertainty"  # unknown: the policy's
    assert f'href="/projects/{project}/review"' in client.get(f"/projects/{project}").text


def test_an_empty_queue_says_so(client: TestClient, project: str) -> None:
    html = client.get(f"/projects/{project}/review").text
    assert 'id="review-empty"' in html and 'id="review-item"' not in html


def test_an_unknown_project_is_a_404_page(client: TestClient) -> None:
    for path in ("/projects/nope/review", "/projects/NOPE/review", "/projects/%00/review"):
        response = client.get(path)
        assert response.status_code == 404 and "<h1>Not found</h1>" in response.text
