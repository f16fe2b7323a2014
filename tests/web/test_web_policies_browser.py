"""The Policies panel in Debian's Chromium against a real `fineloop serve`: open it, turn
on `refit` in the training policy and save (the store has it, the textarea shows what the
server returned); a value the API refuses shows the server's message and stores nothing;
text that is not JSON is reported without any request."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from playwright.sync_api import Page, Request, expect

from conftest import LiveServer


def test_edit_the_training_policy_from_the_dashboard(
    live_server: LiveServer, page: Page, tmp_path: Path
) -> None:
    api = httpx.Client(base_url=live_server.url, timeout=30)
    assert api.post("/v1/projects", json={"name": "faq", "task": "embedding"}).status_code == 201
    assert api.get("/v1/projects/faq").json()["training_policy"]["refit"] is False
    patches: list[str] = []

    def count(request: Request) -> None:
        if request.method == "PATCH":
            patches.append(request.url)

    page.on("request", count)
    page.goto(f"{live_server.url}/projects/faq")
    training = page.locator("#training_policy")
    expect(training).to_be_hidden()  # the panel starts collapsed
    page.locator("#policies-panel summary").click()
    expect(training).to_be_visible()

    policy = json.loads(training.input_value())
    policy["refit"] = True
    training.fill(json.dumps(policy))  # one line: the server's answer comes back indented
    page.click("#save-training_policy")
    expect(page.locator("#training_policy-status")).to_have_text("saved")
    stored = api.get("/v1/projects/faq").json()
    assert stored["training_policy"]["refit"] is True
    assert json.loads(training.input_value()) == stored["training_policy"]
    assert '\n  "refit": true,' in training.input_value()
    page.screenshot(path=tmp_path / "1-saved.png", full_page=True)

    training.fill('{"seed": -1}')
    page.click("#save-training_policy")
    status = page.locator("#training_policy-status")
    expect(status).to_contain_text("seed")
    expect(status).to_have_class("small error-text")
    refused = api.patch("/v1/projects/faq", json={"training_policy": {"seed": -1}})
    assert refused.status_code == 422
    expect(status).to_have_text(refused.json()["message"])  # the server's own words
    training.fill('{"train": {"epoch": 2}}')  # refused by the task's config: a typo
    page.click("#save-training_policy")
    expect(status).to_contain_text("epoch")
    assert api.get("/v1/projects/faq").json()["training_policy"] == stored["training_policy"]

    training.fill('{"refit": true,')  # not JSON: said on the page, nothing sent
    page.click("#save-training_policy")
    expect(status).to_contain_text("not valid JSON")
    assert len(patches) == 3, patches
    page.screenshot(path=tmp_path / "2-refused.png", full_page=True)
