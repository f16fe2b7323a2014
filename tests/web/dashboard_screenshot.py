"""Make the README's dashboard screenshot from a project with real history (not a test).

    .venv/bin/python tests/web/dashboard_screenshot.py docs/dashboard.png

A `fineloop serve` on a scratch data folder; a banking77 support project on the packaged
all-MiniLM-L6-v2; two weeks of simulated users (search, then pick the right intent when it is
shown or name it when it is not, a thumb down when it is not near the top), dated over 14
days; three training runs through the API, a promotion by hand, a rollback and, where
rollouts exist, v3 on 30% of today's traffic; then headless Chromium takes the project page.
Takes a few minutes on a CPU.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS.parent / "bench")]

from conftest import LiveServer  # noqa: E402
from fineloop.config import get_settings  # noqa: E402
from shared_data import banking77  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PROJECT = "banking-support"
PER_DAY = 30
ROLLOUT_USERS = 80
ROUNDS = [range(13, 9, -1), range(8, 4, -1), range(3, -1, -1)]  # days ago, per round


def main(out: Path) -> None:
    data = banking77()
    rng = random.Random(7)
    wanted = PER_DAY * sum(len(days) for days in ROUNDS) + ROLLOUT_USERS
    queries = rng.sample(data.train, wanted)
    with tempfile.TemporaryDirectory() as folder:
        server = LiveServer(get_settings(data_dir=Path(folder)))
        try:
            api = httpx.Client(base_url=server.url, timeout=600)
            setup(api, data.items)
            for number, days in enumerate(ROUNDS, start=1):
                for day in days:
                    for _ in range(PER_DAY):
                        query, intent = queries.pop()
                        simulate(api, query, intent, day)
                if number == 3:  # the last run waits for a person
                    patch_policy(api, auto_promote=False)
                train(api)
            promote = {"version": "v3", "reason": "reviewed: better on card questions"}
            ok(api.post(f"/v1/projects/{PROJECT}/promote", json=promote | {"force": True}))
            back = {"reason": "more thumbs down after the switch"}
            ok(api.post(f"/v1/projects/{PROJECT}/rollback", json=back))
            rollout = {
                "variants": [
                    {"name": "champion", "target": "champion", "weight": 0.7},
                    {"name": "challenger", "target": "v3", "weight": 0.3},
                ]
            }
            if api.put(f"/v1/projects/{PROJECT}/rollout", json=rollout).status_code == 200:
                for user in range(ROLLOUT_USERS):  # today's traffic, split by user
                    query, intent = queries.pop()
                    simulate(api, query, intent, 0, user=f"user-{user}")
            shoot(f"{server.url}/projects/{PROJECT}", out)
        finally:
            server.stop()


def ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def setup(api: httpx.Client, items: dict[str, str]) -> None:
    project = {
        "name": PROJECT,
        "task": "embedding",
        "description": "Customer-support questions matched to the right help article (banking77)",
        "training_policy": {"train": {"epochs": 2, "batch_size": 32}, "bootstrap_samples": 500},
    }
    ok(api.post("/v1/projects", json=project))
    rows = [{"id": key, "text": text} for key, text in items.items()]
    ok(api.put(f"/v1/projects/{PROJECT}/items", json={"items": rows}))


def patch_policy(api: httpx.Client, **changes: Any) -> None:
    policy = ok(api.get(f"/v1/projects/{PROJECT}"))["training_policy"] | changes
    ok(api.patch(f"/v1/projects/{PROJECT}", json={"training_policy": policy}))


def simulate(
    api: httpx.Client, query: str, intent: str, days_ago: int, user: str | None = None
) -> None:
    """One user: a search, then what they said about it, dated `days_ago`."""
    at = datetime.now(UTC) - timedelta(days=days_ago, minutes=random.randrange(600))
    if days_ago == 0:
        at = datetime.now(UTC) - timedelta(minutes=random.randrange(60))
    body = {"query": query, "k": 10} | ({"user_id": user} if user else {})
    found = ok(api.post(f"/v1/projects/{PROJECT}/search", json=body))
    shown = [hit["id"] for hit in found["items"]]
    call, stamp = found["interaction_id"], at.isoformat()
    events: list[dict[str, Any]] = []
    if intent in shown:
        rejected = [item for item in shown[:3] if item != intent]
        events.append(
            {
                "kind": "selection",
                "interaction_id": call,
                "selected": [intent],
                "rejected": rejected,
            }
        )
    else:
        events.append({"kind": "label", "input": query, "items": [intent]})
    if intent not in shown[:3]:
        events.append({"kind": "thumb", "interaction_id": call, "value": "down"})
    for event in events:
        ok(api.post(f"/v1/projects/{PROJECT}/feedback", json=event | {"timestamp": stamp}))


def train(api: httpx.Client) -> None:
    job = ok(api.post(f"/v1/projects/{PROJECT}/train"))
    while job["state"] in ("queued", "running"):
        time.sleep(2)
        job = ok(api.get(f"/v1/jobs/{job['id']}"))
    print(f"job {job['id']}: {job['state']} {job['message']}", flush=True)
    if job["state"] != "succeeded":
        raise RuntimeError(job.get("error"))


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(url)
        page.wait_for_timeout(1500)  # the rollout panel loads after the page
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out, full_page=True)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png").resolve())
