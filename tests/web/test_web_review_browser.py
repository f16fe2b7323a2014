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


def ranking(*scores: float) -> dict[str, Any]:
    """A search output; the closer its scores, the less sure the model was."""
    return {
        "mode": "search",
        "items": [
            {"id": item["id"], "score": s, "probability": round(s, 2), "rank": i + 1}
            for i, (item, s) in enumerate(zip(ITEMS, scores, strict=True))
        ],
    }


def test_review_from_the_keyboard(live_server: LiveServer, page: Page, tmp_path: Path) -> None:
    api = httpx.Client(base_url=live_server.url, timeout=30)
    assert api.post("/v1/projects", json={"name": "faq", "task": "embedding"}).status_code == 201
    assert api.put("/v1/projects/faq/items", json={"items": ITEMS}).status_code == 200
    rows = [  # by uncertainty: unsure (a near tie), middling, text (no score)
        {"id": "unsure", "input": "money back?", "output": ranking(0.7, 0.69)},
        {"id": "middling", "input": "new card", "output": ranking(0.7, 0.6)},
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


def test_label_from_the_catalog_and_edit_a_reply_from_the_keyboard(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    """e opens the family's editor: an embedding ranking is labelled with an item found in
    the catalog by a few words (it was never shown); a generation reply is rewritten, an
    unchanged one refused with the family's reason and the editor kept open."""
    api = httpx.Client(base_url=live_server.url, timeout=30)
    api.post("/v1/projects", json={"name": "faq", "task": "embedding"})
    catalog = [*ITEMS, {"id": "lost", "text": "Report a stolen or lost card"}]
    api.put("/v1/projects/faq/items", json={"items": catalog})
    shown = {"id": "q", "input": "my card was stolen", "output": ranking(0.5, 0.4)}
    api.post("/v1/projects/faq/interactions/batch", json={"interactions": [shown]})
    api.post("/v1/projects", json={"name": "bot", "task": "generation"})
    reply = {"id": "g", "input": {"prompt": "Router blinks red"}, "output": {"text": "Restart."}}
    api.post("/v1/projects/bot/interactions/batch", json={"interactions": [reply]})

    page.goto(f"{live_server.url}/projects/faq/review")
    page.keyboard.press("e")
    expect(page.locator("#review-editor")).to_be_visible()
    expect(page.locator("#editor-text")).to_have_value("refund")  # the model's top item
    page.fill("#editor-text", "")
    page.fill("#catalog-query", "STOLEN")
    page.locator("#catalog-found button[data-add='lost']").click()
    expect(page.locator("#editor-text")).to_have_value("lost")
    page.screenshot(path=tmp_path / "3-label.png", full_page=True)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-sent")).to_have_text("sent: labelled")
    expect(page.locator("#review-editor")).to_be_hidden()
    [label] = api.get("/v1/projects/faq/feedback").json()["items"]
    assert label["kind"] == "label" and label["payload"]["items"] == ["lost"]
    assert label["interaction_id"] == "q" and label["metadata"]["source"] == "review"

    page.goto(f"{live_server.url}/projects/bot/review")
    page.get_by_role("button", name="Edit (e)").click()
    expect(page.locator("#editor-text")).to_have_value("Restart.")
    expect(page.locator("#catalog-lookup")).to_have_count(0)  # no catalog: no lookup
    page.keyboard.press("Control+Enter")  # unchanged: refused, the editor stays
    expect(page.locator("#flash")).to_contain_text("unchanged")
    expect(page.locator("#review-editor")).to_be_visible()
    page.fill("#editor-text", "Hold reset for 10 seconds, then log in again.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-sent")).to_have_text("sent: edited")
    [fixed] = api.get("/v1/projects/bot/feedback").json()["items"]
    assert fixed["kind"] == "correction"
    assert fixed["payload"]["output"] == "Hold reset for 10 seconds, then log in again."
    page.keyboard.press("Escape")  # nothing open: nothing happens, nothing breaks
    expect(page.locator("#review-editor")).to_be_hidden()
