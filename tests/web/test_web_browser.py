"""The dashboard as a person uses it: Debian's Chromium, driven by Playwright, against a real
`fineloop serve` with its worker. Train by clicking, watch the job live, promote, see the
alias history move, run a rollout and change its weights. Screenshots of each step land in
the test's temporary folder."""

from __future__ import annotations

import time
from pathlib import Path

from jobs_fixtures import MakeProject
from playwright.sync_api import Page, Route, expect

from conftest import LiveServer
from fineloop.config import Settings

STEPS = 12


def test_train_watch_and_promote_from_the_dashboard(
    fake_project: MakeProject, settings: Settings, page: Page, tmp_path: Path
) -> None:
    fake_project("shop", auto_promote=False)  # so promotion is left to the person
    server = LiveServer(settings)
    try:
        page.goto(f"{server.url}/")
        page.get_by_role("link", name="shop").click()
        expect(page.get_by_role("heading", name="Model versions")).to_be_visible()
        expect(page.locator("#champion")).to_have_text("—")  # no training yet
        page.screenshot(path=tmp_path / "1-project.png", full_page=True)

        page.fill("#overrides", f'{{"steps": {STEPS}, "step_seconds": 0.4}}')
        page.click("#start-training")
        page.wait_for_url("**/jobs/*")
        counts, percents = watch_job(page, tmp_path / "2-job-running.png")
        expect(page.locator("#job-state")).to_have_text("succeeded")
        page.screenshot(path=tmp_path / "3-job-done.png", full_page=True)

        # The loss chart grew while the job ran, in more than one step, to every point.
        assert counts == sorted(counts), counts
        assert len({c for c in counts if 0 < c < STEPS}) >= 1, counts
        assert counts[-1] == STEPS
        assert page.evaluate("fineloop.charts.loss.data.datasets[0].data.at(-1).y") == 1 / STEPS
        assert any(0 < p < 100 for p in percents), percents  # the bar moved, live
        expect(page.locator("#events")).to_contain_text("v1 registered; champion stays v0")

        page.click("#job-version")
        row = page.locator('#versions tr[data-version="v1"]')
        expect(row).to_contain_text("challenger")
        expect(row.locator(".badge.succeeded")).to_have_text("passed")  # the gate
        expect(page.locator("#champion")).to_have_text("v0")
        row.get_by_role("button", name="Promote").click()

        expect(page.locator("#champion")).to_have_text("v1")
        newest = page.locator("#alias-history tbody tr").first
        expect(newest).to_contain_text("champion")
        expect(newest).to_contain_text("v0 → v1")
        expect(newest).to_contain_text("promoted from the dashboard")
        page.screenshot(path=tmp_path / "4-promoted.png", full_page=True)

        # A rollout: 10% of traffic to the previous champion, then 30%, then over.
        page.select_option("#rollout select[name=target]", "v0")
        page.click("#start-rollout")
        weight = page.locator('#rollout-variants input[data-variant="challenger"]')
        expect(weight).to_have_value("10")
        expect(page.locator("#rollout-variants")).to_contain_text("v0")
        weight.fill("30")
        page.locator('#rollout-variants input[data-variant="champion"]').fill("70")
        page.click("#save-weights")
        expect(page.locator("#flash")).to_contain_text("Rollout saved")
        expect(weight).to_have_value("30")
        page.screenshot(path=tmp_path / "5-rollout.png", full_page=True)
        page.click("#end-rollout")
        expect(page.locator("#no-rollout")).to_be_visible()
        expect(page.locator("#rollout-history")).to_contain_text("ended by hand")
    finally:
        server.stop()


def test_without_a_stream_the_job_page_polls_and_still_follows_the_job(
    fake_project: MakeProject, settings: Settings, page: Page
) -> None:
    """A proxy that answers the SSE request with the JSON list: the page polls instead."""
    fake_project("shop")
    server = LiveServer(settings)

    def no_stream(route: Route) -> None:
        if "text/event-stream" in (route.request.headers.get("accept") or ""):
            route.fulfill(status=200, content_type="application/json", body="[]")
        else:
            route.continue_()

    try:
        page.route("**/v1/jobs/*/events*", no_stream)
        page.goto(f"{server.url}/projects/shop")
        page.fill("#overrides", f'{{"steps": {STEPS}, "step_seconds": 0.3}}')
        page.click("#start-training")
        page.wait_for_url("**/jobs/*")
        wait_until(page, "fineloop.live.mode === 'polling'")
        counts, _ = watch_job(page)
        assert page.locator("#job-live").inner_text() == ""
        assert counts[-1] == STEPS and counts == sorted(counts), counts
        expect(page.locator("#events")).to_contain_text("v1 registered")
        expect(page.locator("#job-version")).to_have_text("v1")
    finally:
        server.stop()


def watch_job(page: Page, shot: Path | None = None) -> tuple[list[int], list[int]]:
    """Sample the loss chart's point count and the progress bar until the job ends."""
    counts: list[int] = []
    percents: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = page.locator("#job-state").inner_text()
        counts.append(page.evaluate("fineloop.charts.loss.data.datasets[0].data.length"))
        percents.append(int(page.locator("#job-percent").inner_text().rstrip("%")))
        if shot is not None and 0 < counts[-1] < STEPS and not shot.exists():
            page.screenshot(path=shot, full_page=True)
        if state in ("succeeded", "failed", "cancelled"):
            # a poll shows the final state before it loads its metrics: count once it is done
            wait_until(page, "fineloop.live.mode === 'done'")
            counts.append(page.evaluate("fineloop.charts.loss.data.datasets[0].data.length"))
            return counts, percents
        page.wait_for_timeout(150)
    raise AssertionError(f"the job did not end in time; loss points seen: {counts}")


def test_with_keys_a_person_logs_in_and_the_live_view_and_actions_use_the_cookie(
    fake_project: MakeProject, settings: Settings, page: Page, tmp_path: Path
) -> None:
    fake_project("shop")
    key = "dashboard-admin-key-0123456789abcdefghij"
    ingest = "ingest-only-key-0123456789abcdefghijklmn"
    server = LiveServer(settings, {"FINELOOP_API_KEYS": f"{key}:admin,{ingest}:ingest"})
    try:
        page.goto(f"{server.url}/projects/shop")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.fill("input[name=key]", ingest)
        page.click("button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("needs an admin key")
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/projects/shop")
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        (cookie,) = page.context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
            "fineloop_key",
            True,
            "Strict",
        )

        page.fill("#overrides", '{"steps": 200, "step_seconds": 0.25}')
        page.click("#start-training")  # fetch() POST, authenticated by the cookie
        page.wait_for_url("**/jobs/*")
        wait_until(page, "fineloop.live.mode === 'sse'")  # EventSource got in too
        wait_until(page, "fineloop.charts.loss.data.datasets[0].data.length > 0")
        page.screenshot(path=tmp_path / "keys-job-running.png", full_page=True)
        page.click("#cancel-job")
        expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
        wait_until(page, "fineloop.live.mode === 'done'")
    finally:
        server.stop()


def wait_until(page: Page, expression: str, timeout: float = 60) -> None:
    """Poll a JS expression (wait_for_function would need eval, which the page's CSP bans)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(100)
