"""A generation project's pages in Debian's Chromium against a real `fineloop serve`: the
interactions with their feedback, a training job whose loss (one line per method) and DPO
reward curves grow live, and the replies side by side. The job's reports are written here
as the generation trainer writes them (the real trainer's are checked in
test_web_generation.py), so the page is watched while the run is in the middle of DPO."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.sink import StoreSink
from fineloop.registry.versions import register_version
from fineloop.store import Store
from fineloop.store.projects import get_project

ATTACK = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that fails the test on any script error or dialog (hostile text ran)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "dialog", lambda dialog: (errors.append(f"dialog {dialog.message}"), dialog.dismiss())
    )
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors or dialogs on the page: {errors}"


def sample(n: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"How do I change my plan? ({n})"}]},
        "reference": "Open settings, choose plan.",
        "outputs": {"base": "No idea.", "champion": "No idea.", "candidate": f"Open settings {n}."},
    }


METRICS = {
    "primary": "sft_loss",
    "higher_is_better": False,
    "candidate": {"sft_loss": 1.2},
    "champion": {"sft_loss": 2.0},
    "base": {"sft_loss": 2.0},
    "champion_version": "v0",
    "base_version": "v0",
    "samples": [sample(0), sample(1)],
}


def seed(client: TestClient, store: Store, tiny_llama: Path) -> None:
    made = client.post(
        "/v1/projects", json={"name": "bot", "task": "generation", "base_model": str(tiny_llama)}
    )
    assert made.status_code == 201, made.text
    rows = [
        {
            "id": "a",
            "input": {"prompt": "How do I reset it?"},
            "output": {"text": "No idea, sorry."},
        },
        {"id": "b", "input": {"prompt": ATTACK}, "output": {"text": ATTACK}},
    ]
    assert client.post(
        "/v1/projects/bot/interactions/batch", json={"interactions": rows}
    ).is_success
    events = [
        {"kind": "correction", "interaction_id": "a", "output": "Open settings, sorry."},
        {"kind": "thumb", "interaction_id": "b", "value": "down"},
        {"kind": "preference", "chosen_interaction_id": "a", "rejected_interaction_id": "b"},
    ]
    assert client.post("/v1/projects/bot/feedback/batch", json={"events": events}).is_success
    with store.write() as session:
        project = get_project(session, "bot")
        register_version(session, project, artifact_uri=str(tiny_llama), base_model="base")
        register_version(
            session, project, artifact_uri="/nowhere", base_model="base", metrics=METRICS
        )


def test_a_generation_project_and_its_training_job_in_the_browser(
    client: TestClient,
    store: Store,
    settings: Settings,
    tiny_llama: Path,
    page: Page,
    tmp_path: Path,
) -> None:
    seed(client, store, tiny_llama)
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, "bot"), "train", {}, claimed_by="t")
    sink = StoreSink(store, job.id, interval=0)
    sink.log("sft: 6 rows + 0 replayed")
    sink.log("sft step 1/3: loss 2.0000")
    for step, loss in ((1, 2.0), (2, 1.6), (3, 1.3)):
        sink.metric("loss", step, loss)
    sink.log("dpo: 4 rows + 1 replayed")
    sink.log("dpo step 1/2: loss 0.6931, rewards/margins 0.0100")
    sink.metric("loss", 4, 0.6931)
    sink.metric("rewards/margins", 4, 0.01)
    sink.progress(0.6, "dpo: step 1/2")
    sink.flush()

    server = LiveServer(settings)
    try:
        page.goto(f"{server.url}/projects/bot")
        table = page.locator("#interactions")
        expect(table.locator("tr[data-interaction-id]")).to_have_count(2)
        row = table.locator('tr[data-interaction-id="a"]')
        expect(row.locator(".diff del")).to_have_text("No idea, ")
        expect(row.locator(".diff ins")).to_have_text("Open settings, ")
        hostile = table.locator('tr[data-interaction-id="b"] td.reply')
        expect(hostile).to_have_text(ATTACK)  # shown as the text it is
        expect(row.locator(".side-chosen")).to_have_text("this reply chosen")
        expect(table.locator('tr[data-interaction-id="b"] .side-rejected')).to_be_visible()
        expect(page.locator("#samples-panel tr.sample")).to_have_count(2)
        expect(page.locator("#samples-panel td.output.candidate").first).to_have_text(
            "Open settings 0."
        )
        page.screenshot(path=tmp_path / "1-generation-project.png", full_page=True)

        page.goto(f"{server.url}/jobs/{job.id}")
        expect(page.locator("#methods tr[data-method]")).to_have_count(2)
        expect(page.locator('#methods tr[data-method="dpo"]')).to_contain_text("DPO")
        wait_until(page, "fineloop.live.mode === 'sse'")
        labels = "fineloop.charts.loss.data.datasets.map((d) => d.label + ':' + d.data.length)"
        assert page.evaluate(labels) == ["loss (sft):3", "loss (dpo):1"]

        # the run goes on: the page draws the new points as they arrive
        sink.metric("loss", 5, 0.65)
        sink.metric("rewards/margins", 5, 0.3)
        sink.metric("rewards/accuracies", 5, 1.0)
        sink.flush()
        wait_until(page, "fineloop.charts.loss.data.datasets[1].data.length === 2")
        wait_until(page, "fineloop.charts.metrics.data.datasets.length === 2")
        margins = "fineloop.charts.metrics.data.datasets.find((d) => d.label === 'rewards/margins')"
        assert page.evaluate(f"{margins}.data.map((p) => p.y)") == [0.01, 0.3]
        colors = "new Set(fineloop.charts.metrics.data.datasets.map((d) => d.borderColor)).size"
        assert page.evaluate(colors) == 2  # a curve that arrives later gets its own color
        page.screenshot(path=tmp_path / "2-generation-job-running.png", full_page=True)

        with store.write() as session:
            assert jobs.finish(session, job.id, jobs.SUCCEEDED, "done", result={"metrics": METRICS})
        expect(page.locator("#job-state")).to_have_text("succeeded", timeout=30_000)
        page.reload()
        expect(page.locator("#samples-panel tr.sample")).to_have_count(2)
        page.screenshot(path=tmp_path / "3-generation-job-done.png", full_page=True)
    finally:
        server.stop()


def wait_until(page: Page, expression: str, timeout: float = 60) -> None:
    """Poll a JS expression (wait_for_function would need eval, which the CSP bans)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(100)
