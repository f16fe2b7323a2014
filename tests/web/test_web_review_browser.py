"""The review page driven from the keyboard in Debian's Chromium against a real `fineloop
serve`: move with j/k, open the help with ?, pick an item with its number, reject all with
x, thumb a text output with 1; each answer is then an ordinary feedback event in the store,
and the answered interactions are gone from the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from conftest import LiveServer

ITEMS = [
    {"id": "refund", "text": "How to get your money back"},
    {"id": "card", "text": "Order a new card"},
]


def ranking(*probabilities: float) -> dict[str, Any]:
    return {
        "mode": "search",
        "items": [
            {"id": item["id"], "score": 0.8 - 0.1 * i, "probability": p, "rank": i + 1}
            for i, (item, p) in enumerate(zip(ITEMS, probabilities, strict=True))
        ],
    }


def test_review_from_the_keyboard(live_server: LiveServer, page: Page, tmp_path: Path) -> None:
    api = httpx.Client(base_url=live_server.url, timeout=30)
    assert api.post("/v1/projects", json={"name": "faq", "task": "embedding"}).status_code == 201
    assert api.put("/v1/projects/faq/items", json={"items": ITEMS}).status_code == 200
    rows = [  # by uncertainty: unsure (0.99), middling (0.8), text (no score)
        {"id": "unsure", "input": "money back?", "output": ranking(0.49, 0.2)},
        {"id": "middling", "input": "new card", "output": ranking(0.3, 0.7)},
        {"id": "text", "input": "say hi", "output": {"text": "hello"}},
    ]
    assert (
        api.post("/v1/projects/faq/interactions/batch", json={"interactions": rows}).status_code
        == 201
    )

    page.goto(f"{live_server.url}/projects/faq")
    page.click("#review-link")
    expect(page.locator("#review-input")).to_have_text("money back?")
    page.keyboard.press("?")
    expect(page.locator("#review-help")).to_be_visible()
    page.keyboard.press("j")
    expect(page.locator("#review-input")).to_have_text("new card")
    expect(page.locator("#review-position")).to_have_text("2")
    page.keyboard.press("k")
    expect(page.locator("#review-input")).to_have_text("money back?")
    page.screenshot(path=tmp_path / "1-review.png", full_page=True)

    page.keyboard.press("2")  # pick the second shown item: "card"
    expect(page.locator("#review-input")).to_have_text("new card")
    page.keyboard.press("x")  # none of the shown items is right
    expect(page.locator("#review-output")).to_have_text('{"text": "hello"}')
    page.keyboard.press("1")  # thumbs up: the last one, so the page says what it sent
    expect(page.locator("#review-sent")).to_have_text("sent: thumbs up")
    expect(page.locator("#flash")).to_contain_text("End of this page: 3 answered")
    page.screenshot(path=tmp_path / "2-answered.png", full_page=True)

    events = api.get("/v1/projects/faq/feedback").json()["items"]
    by_interaction = {e["interaction_id"]: e for e in events}
    assert len(events) == 3
    assert by_interaction["unsure"]["payload"] == {"selected": ["card"], "rejected": []}
    assert by_interaction["unsure"]["idempotency_key"] == "review:unsure:pick2"
    assert by_interaction["middling"]["payload"]["rejected"] == ["refund", "card"]
    assert by_interaction["text"]["kind"] == "thumb"
    assert by_interaction["text"]["payload"] == {"value": "up"}
    assert api.get("/v1/projects/faq/review").json()["items"] == []
    page.get_by_role("button", name="Load the queue again").click()
    expect(page.locator("#review-empty")).to_be_visible()
