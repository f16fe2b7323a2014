"""The dashboard for generation projects: interactions with their feedback, the methods a
training run chose, its live curves, and base / champion / candidate replies side by side."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.training_steps import SAMPLES, Comparison
from fineloop.registry.gate import GateDecision
from fineloop.registry.versions import list_versions
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks.base import Evaluation
from fineloop.tasks.generation.train import RECORD as TRAIN_RECORD
from fineloop.tasks.generation.web.job import RECORD, logged_methods
from fineloop.tasks.generation.web.project import PAGE
from fineloop.tasks.generation.web.textdiff import MAX_DIFF_CHARS, word_diff


def sampled(outputs: list[str], prompts: list[str]) -> Evaluation:
    samples = [
        {"input": {"prompt": p}, "reference": f"ref {p}", "output": o}
        for p, o in zip(prompts, outputs, strict=True)
    ]
    return Evaluation({"score": 1.0}, "score", [1.0], samples=samples)


def test_a_version_records_samples_side_by_side_matched_by_input() -> None:
    prompts = [f"q{i}" for i in range(SAMPLES + 2)]
    base = sampled([f"base {p}" for p in prompts], prompts)
    champion = sampled(["other"] + [f"champ {p}" for p in prompts[1:]], ["elsewhere", *prompts[1:]])
    candidate = sampled([f"cand {p}" for p in prompts], prompts)
    comparison = Comparison("score", base, champion, candidate, "v0", "v1")
    metrics = comparison.as_metrics(GateDecision(False, "no", "score", 0.0, None))
    rows = metrics["samples"]
    assert len(rows) == SAMPLES
    assert rows[0] == {
        "input": {"prompt": "q0"},
        "reference": "ref q0",
        "outputs": {"candidate": "cand q0", "base": "base q0", "champion": None},
    }
    assert rows[1]["outputs"]["champion"] == "champ q1"
    bare = [Evaluation({"score": 1.0}, "score") for _ in range(3)]
    plain = Comparison("score", *bare, "v0", "v0")
    assert "samples" not in plain.as_metrics(GateDecision(False, "no", "score", 0.0, None))


# --- the project page: interactions with their feedback ----------------------------------

ATTACK = '</script><script>alert(1)</script><img src=x onerror="alert(2)">'
TRAIN = {"epochs": 1, "batch_size": 4, "lora_r": 4, "max_length": 64}


def create(client: TestClient, name: str, base: Path) -> None:
    created = client.post(
        "/v1/projects",
        json={
            "name": name,
            "task": "generation",
            "base_model": str(base),
            "training_policy": {"train": TRAIN, "bootstrap_samples": 100},
        },
    )
    assert created.status_code == 201, created.text


def log(client: TestClient, name: str, rows: list[dict[str, Any]]) -> None:
    sent = client.post(f"/v1/projects/{name}/interactions/batch", json={"interactions": rows})
    assert sent.is_success, sent.text


def feedback(client: TestClient, name: str, events: list[dict[str, Any]]) -> None:
    sent = client.post(f"/v1/projects/{name}/feedback/batch", json={"events": events})
    assert sent.is_success, sent.text


def page_data(html: str) -> dict[str, Any]:
    """The JSON the page's scripts draw from."""
    found = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, html[:500]
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def panel(html: str, section: str) -> str:
    """The HTML of one panel of the page."""
    start = html.index(f'id="{section}"')
    return html[start : html.index("</section>", start)]


def test_interactions_show_their_feedback_kinds_and_hostile_text_stays_text(
    client: TestClient, tiny_llama: Path
) -> None:
    create(client, "chat", tiny_llama)
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "How do I reset my password?"},
        ]
    }
    log(
        client,
        "chat",
        [
            {
                "id": "a",
                "input": chat,
                "output": {"text": "No idea, sorry."},
                "model_version": "v0",
                "variant": "champion",
            },
            {"id": "b", "input": {"prompt": ATTACK}, "output": {"text": ATTACK}},
            {"id": "c", "input": {"prompt": "Other"}, "output": {"text": "Second reply."}},
        ],
    )
    feedback(
        client,
        "chat",
        [
            {"kind": "thumb", "interaction_id": "a", "value": "down"},
            {"kind": "rating", "interaction_id": "a", "value": 2},
            {
                "kind": "correction",
                "interaction_id": "a",
                "output": "Open settings, then reset it, sorry.",
            },
            {"kind": "preference", "chosen_interaction_id": "c", "rejected_interaction_id": "b"},
            {"kind": "correction", "interaction_id": "b", "output": {"text": ATTACK + " fixed"}},
        ],
    )
    response = client.get("/projects/chat")
    assert response.status_code == 200
    html = response.text
    rows = panel(html, "interactions-panel")
    assert rows.count("data-interaction-id=") == 3
    a = rows[rows.index('data-interaction-id="a"') : rows.index('data-interaction-id="b"')]
    # chat turns with their roles, the reply, who served it
    assert '<div class="turn system"><span class="role">system</span>' in a
    assert "How do I reset my password?" in a and "No idea, sorry." in a
    assert "v0" in a and '<span class="badge">champion</span>' in a
    # every kind of feedback on it, the correction as a word diff against the reply
    assert "thumb-down" in a and '<span class="strong">2.0</span>' in a
    assert "<del>No idea, </del><ins>Open settings, then reset it, </ins><span>sorry.</span>" in a
    # the preference is shown on both interactions it names, with their replies
    b = rows[rows.index('data-interaction-id="b"') : rows.index('data-interaction-id="c"')]
    c = rows[rows.index('data-interaction-id="c"') :]
    for side in (b, c):
        assert "fb-preference" in side and "Second reply." in side
    assert "this reply rejected" in b and "this reply chosen" in c
    # hostile text, in a prompt, a reply and a correction, renders inert
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in b
    assert "family" not in page_data(html)  # the panel is HTML only, not page JSON


def test_interactions_are_paged_newest_first(client: TestClient, tiny_llama: Path) -> None:
    create(client, "paged", tiny_llama)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    log(
        client,
        "paged",
        [
            {
                "id": f"i{n:02d}",
                "input": {"prompt": f"question {n}"},
                "output": {"text": f"answer {n}"},
                "created_at": (start + timedelta(minutes=n)).isoformat(),
            }
            for n in range(PAGE + 5)
        ],
    )

    def shown(query: str) -> list[str]:
        html = client.get(f"/projects/paged{query}").text
        return re.findall(r'data-interaction-id="([^"]+)"', html)

    first = shown("")
    assert len(first) == PAGE and first[0] == f"i{PAGE + 4:02d}"  # newest first
    second = shown("?page=2")
    assert second == [f"i{n:02d}" for n in range(4, -1, -1)]
    assert not set(first) & set(second)
    assert shown("?page=99") == second  # past the end: the last page
    for bad in ("?page=abc", "?page=-1", "?page=0", "?page=" + "9" * 40):
        response = client.get(f"/projects/paged{bad}")
        assert response.status_code == 200
    assert 'rel="next"' in client.get("/projects/paged").text


def test_an_embedding_project_has_no_generation_panels(client: TestClient) -> None:
    assert client.post("/v1/projects", json={"name": "shop", "task": "embedding"}).is_success
    html = client.get("/projects/shop").text
    assert "interactions-panel" not in html and "samples-panel" not in html


def test_a_correction_diff_rebuilds_both_texts_and_long_texts_are_not_diffed() -> None:
    before, after = "the cat sat on the mat", "the dog sat on a mat today"
    segments = word_diff(before, after)
    assert segments is not None
    assert "".join(s["text"] for s in segments if s["op"] != "ins") == before
    assert "".join(s["text"] for s in segments if s["op"] != "del") == after
    assert {"op": "del", "text": "cat "} in segments and {"op": "ins", "text": "dog "} in segments
    assert word_diff("x" * (MAX_DIFF_CHARS + 1), "y") is None


# --- a training run: methods, curves, replies side by side --------------------------------


def seed_feedback(client: TestClient, name: str) -> None:
    """Replies the app logged, corrected and judged, and preferences: SFT and DPO rows."""
    topics = ["password", "invoice", "refund", "address", "card", "order", "login", "plan"]
    rows, events = [], []
    for i, topic in enumerate(topics):
        rows.append(
            {
                "id": f"g{i}",
                "input": {"prompt": f"How do I change my {topic}? ({i})"},
                "output": {"text": "No idea."},
            }
        )
        fixed = f"Open settings, choose {topic}, and follow the steps."
        events.append({"kind": "correction", "interaction_id": f"g{i}", "output": fixed})
        events.append({"kind": "thumb", "interaction_id": f"g{i}", "value": "down"})
    log(client, name, rows)
    feedback(client, name, events)


def run_training(store: Store, settings: Settings, name: str) -> jobs.Job:
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
    execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        return jobs.get_job(session, job.id)


def test_a_training_run_shows_its_methods_curves_and_replies_side_by_side(
    client: TestClient, store: Store, settings: Settings, tiny_llama: Path
) -> None:
    create(client, "bot", tiny_llama)
    seed_feedback(client, "bot")
    job = run_training(store, settings, "bot")
    assert job.state == "succeeded", job.error

    # the version keeps the first held-out replies of base, champion and candidate
    with store.read() as session:
        version = list_versions(session, get_project(session, "bot").id)[-1]
    samples = version.metrics["samples"]
    assert 0 < len(samples) <= SAMPLES
    for sample in samples:
        assert sample["input"]["messages"][-1]["role"] == "user"
        assert sample["reference"].startswith("Open settings, choose ")
        assert all(isinstance(sample["outputs"][k], str) for k in ("base", "champion", "candidate"))
    record = json.loads((Path(version.artifact_uri) / RECORD).read_text())
    assert record["methods"] == ["sft", "dpo"]  # corrections give SFT rows and DPO pairs

    response = client.get(f"/jobs/{job.id}")
    assert response.status_code == 200
    html, data = response.text, page_data(response.text)
    methods = panel(html, "methods-panel")
    assert "from the adapter&#39;s fineloop_training.json" in methods
    for method in record["methods"]:
        assert f'data-method="{method}"' in methods
        assert f'<td class="num">{record["rows"][method]}</td>' in methods
    assert "Reward margin and accuracy" in html
    # the stages split the run's steps; every loss point lies in one, DPO's curves in DPO's
    stages = data["stages"]
    assert [s["label"] for s in stages] == ["sft", "dpo"]
    assert stages[0]["first"] == 1 and stages[1]["first"] == stages[0]["last"] + 1
    series = data["series"]
    assert all(stages[0]["first"] <= p["step"] <= stages[-1]["last"] for p in series["loss"])
    dpo = stages[1]
    assert series["rewards/margins"] and series["rewards/accuracies"]
    assert all(dpo["first"] <= p["step"] <= dpo["last"] for p in series["rewards/margins"])
    side = panel(html, "samples-panel")
    assert side.count('class="sample"') == len(samples)
    assert "v0 (base)" in side and samples[0]["reference"] in side

    # a running job has no record yet: its log lines say the same
    with store.read() as session:
        logged = logged_methods(session, job.id)
    assert [(m["method"], m["rows"], m["replay_rows"]) for m in logged] == [
        (m, record["rows"][m], record["replay_rows"][m]) for m in record["methods"]
    ]
    assert [m["steps"] for m in logged] == [s["last"] - s["first"] + 1 for s in stages]

    project = client.get("/projects/bot").text
    side = panel(project, "samples-panel")
    assert side.count('class="sample"') == len(samples)
    assert "v1 (candidate)" in side and "v0 (base)" in side
    assert RECORD == TRAIN_RECORD
