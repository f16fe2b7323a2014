"""The project page's Policies panel, as the server renders it: one textarea per policy,
prefilled with the stored policy as indented JSON, escaped as text, collapsed at first."""

from __future__ import annotations

import html
import json
import re

from fastapi.testclient import TestClient

HOOK = "https://hooks.example/</textarea><script>alert(1)</script>"


def textarea(page: str, field: str) -> str:
    found = re.search(rf'<textarea id="{field}"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, f"no textarea for {field}"
    return found.group(1)


def test_the_policies_panel_shows_each_stored_policy_escaped(client: TestClient) -> None:
    created = client.post(
        "/v1/projects",
        json={
            "name": "faq",
            "task": "embedding",
            "training_policy": {"refit": True, "webhook_url": HOOK},
            "serving_policy": {"calibration": "platt"},
            "review_policy": {"ranking": "recent", "limit": 20},
        },
    )
    assert created.status_code == 201, created.text
    stored = client.get("/v1/projects/faq").json()

    page = client.get("/projects/faq").text

    assert '<details class="panel" id="policies-panel">' in page  # closed: no `open`
    for field in ("training_policy", "serving_policy", "review_policy"):
        shown = textarea(page, field)
        assert json.loads(html.unescape(shown)) == stored[field]
        assert f'data-action="save-policy" data-policy="{field}"' in page
    training = textarea(page, "training_policy")
    assert "&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in training
    assert '\n  "refit": true,' in html.unescape(training)  # indented, one key a line
    assert "<script>alert(1)" not in page  # nowhere as markup, page data included
    assert '"ranking": "recent"' in html.unescape(textarea(page, "review_policy"))
