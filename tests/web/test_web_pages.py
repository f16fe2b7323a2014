"""The dashboard's pages as HTML: what they show from the store, 404 pages, never a 500."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject

from fineloop.feedback.events import ThumbEvent
from fineloop.operations import store_feedback
from fineloop.registry.aliases import set_alias
from fineloop.registry.versions import register_version
from fineloop.store import Store
from fineloop.store.projects import get_project

WEB = Path(__file__).resolve().parents[2] / "src" / "fineloop" / "web"


def page_data(html: str) -> dict[str, object]:
    """The JSON the page's scripts draw from (charts, rollout targets)."""
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, html[:500]
    data: dict[str, object] = json.loads(found.group(1))
    return data


def trained_version(store: Store, project: str, score: float, champion: float) -> None:
    """A registered v1 as a training run leaves it: metrics of candidate, champion and base."""
    with store.write() as session:
        found = get_project(session, project)
        base = register_version(session, found, artifact_uri="/base", base_model="base")
        set_alias(session, found, "champion", base, reason="base model", actor="test")
        version = register_version(
            session,
            found,
            artifact_uri="/nowhere",
            base_model="base",
            parent_id=base.id,
            metrics={
                "primary": "ndcg@10",
                "candidate": {"ndcg@10": score, "mrr@10": score - 0.05},
                "champion": {"ndcg@10": champion, "mrr@10": champion - 0.05},
                "base": {"ndcg@10": champion, "mrr@10": champion - 0.05},
                "champion_version": "v0",
                "base_version": "v0",
                "interval": {"mean": score - champion, "low": 0.01, "high": 0.2, "samples": 200},
            },
            gate={"passed": True, "reason": "lower bound above margin"},
        )
        set_alias(session, found, "challenger", version, reason="trained by hand", actor="test")


def test_the_project_page_shows_feedback_jobs_versions_and_history(
    client: TestClient, store: Store, fake_project: MakeProject
) -> None:
    name = fake_project("shop")
    week_ago = datetime.now(UTC) - timedelta(days=6)
    store_feedback(
        store, name, [ThumbEvent(kind="thumb", value="down", input="q", timestamp=week_ago)]
    )
    job = client.post(f"/v1/projects/{name}/train").json()  # no worker here: stays queued
    trained_version(store, name, score=0.8123, champion=0.7)
    client.post(f"/v1/projects/{name}/promote", json={"version": "v1", "reason": "better"})

    home = client.get("/")
    assert home.status_code == 200 and 'href="/projects/shop"' in home.text
    response = client.get(f"/projects/{name}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    html = response.text
    assert f'data-job-id="{job["id"]}" data-state="queued"' in html
    assert 'data-action="cancel"' in html
    assert "0.812" in html and "+0.112" in html  # ndcg@10 and the difference to v0
    assert "[+0.010, +0.200]" in html  # the gate's interval
    assert "v0 → <b>v1</b>" in html and "better" in html  # the promotion, in the history
    assert 'id="champion">v1<' in html

    data = page_data(html)
    daily = data["daily"]
    assert isinstance(daily, list) and len(daily) == 7  # six empty days filled in between
    assert [d["count"] for d in daily] == [1, 0, 0, 0, 0, 0, 18]
    matrix = data["matrix"]
    assert isinstance(matrix, dict)
    assert matrix["names"] == ["ndcg@10", "mrr@10"]  # primary first
    assert [c["label"] for c in matrix["columns"]] == ["v0 (base)", "v1"]
    assert matrix["best"] == {"ndcg@10": 0.8123, "mrr@10": pytest.approx(0.7623)}


def test_the_job_page_shows_state_events_and_series(
    client: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project("shop")
    job = client.post(f"/v1/projects/{name}/train").json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    response = client.get(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert 'id="job-state">cancelled<' in response.text
    assert "cancelled before it started" in response.text
    data = page_data(response.text)
    assert data["series"] == {}
    assert [e["message"] for e in data["events"]] == ["queued", "cancelled before it started"]  # type: ignore[index, union-attr]


def test_text_from_users_cannot_become_markup_or_script(client: TestClient) -> None:
    attack = "</script><script>alert(1)</script><b>x</b>"
    created = client.post(
        "/v1/projects", json={"name": "xss", "task": "embedding", "description": attack}
    )
    assert created.status_code == 201
    for path in ("/", "/projects/xss"):
        html = client.get(path).text
        assert "<script>alert(1)" not in html and "<b>x</b>" not in html
    assert page_data(client.get("/projects/xss").text)["project"]["description"] == attack  # type: ignore[index]


@pytest.mark.parametrize(
    "path",
    [
        "/projects/nope",
        "/projects/NOPE",
        "/projects/" + "a" * 300,
        "/projects/%00",
        "/projects/%C3%A9t%C3%A9",
        "/projects/%3Cscript%3E",
        "/jobs/999",
        "/jobs/0",
        "/jobs/-1",
        "/jobs/abc",
        "/jobs/99999999999999999999999",
        "/jobs/%EF%BC%91",  # a full-width digit one: isdigit() says yes, int() would too
    ],
)
def test_unknown_projects_and_jobs_are_a_404_page_never_a_500(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in response.text
    assert "<script>" not in response.text.split('<script id="page-data"')[0]


def test_static_files_are_served_from_the_package_and_nothing_else(client: TestClient) -> None:
    chart = client.get("/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4" in chart.text[:200]
    assert client.get("/static/dashboard.css").status_code == 200
    for escape in ("/static/%2e%2e/routes.py", "/static/..%2froutes.py", "/static/nope.js"):
        assert client.get(escape).status_code == 404


def test_the_package_data_ships_every_template_and_static_file() -> None:
    """What pyproject's package-data globs match is what a wheel carries."""
    text = (WEB.parents[2] / "pyproject.toml").read_text()
    patterns = re.findall(r'"(web/[^"]+)"', text)
    package = WEB.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    needed = {p for p in WEB.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert needed, "no web files found"
    assert needed <= shipped, sorted(str(p) for p in needed - shipped)
    assert (WEB / "static" / "vendor" / "chart.js.LICENSE.md").is_file()
