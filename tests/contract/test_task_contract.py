"""Every installed task family through the whole loop, with no family-specific code here
beyond how to make its feedback: build from feedback → train → evaluate with the metric's
direction → register → gate → serve the champion → feedback on what was served.

A new family joins by adding its cases to CASES (and its entry point to the package).
The fake families (tests/jobs/jobs_fake_task.py) are plugins: `fake` is judged by a score
(higher is better), `fake-loss` by an error (lower is better), so a gate that assumed a
direction would promote the worse `fake-loss` model and keep the better one out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_fake_task import make_model

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.registry.versions import list_versions, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks import available, get_task
from fineloop.tasks.base import Predictor, Task
from handmade_snapshot import ITEMS, QUERIES

EMBEDDING_TRAIN = {
    "epochs": 4,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
}


def search(client: TestClient, name: str) -> dict[str, Any]:
    served = client.post(f"/v1/projects/{name}/search", json={"query": "reset my password"})
    assert served.status_code == 200, served.text
    body: dict[str, Any] = served.json()
    return body


def chat(client: TestClient, name: str) -> dict[str, Any]:
    ask = {"model": name, "messages": [{"role": "user", "content": "How do I reset it?"}]}
    served = client.post("/v1/chat/completions", json=ask | {"max_tokens": 6})
    assert served.status_code == 200, served.text
    body: dict[str, Any] = served.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    return body


def score(client: TestClient, name: str) -> dict[str, Any]:
    task = "fake-loss" if name == "fakeloss" else "fake"
    served = client.post(f"/v1/projects/{name}/{task}/score", json={"query": "query number 1"})
    assert served.status_code == 200, served.text
    body: dict[str, Any] = served.json()
    assert body["prepared"] is True  # the shared model cache prepared it for serving
    return body


def extract(client: TestClient, name: str) -> dict[str, Any]:
    text = {"text": "reset the password of the account"}
    served = client.post(f"/v1/projects/{name}/extract", json=text)
    assert served.status_code == 200, served.text
    body: dict[str, Any] = served.json()
    (result,) = body["results"]
    assert all(0 <= s["start"] < s["end"] <= len(text["text"]) for s in result["spans"])
    return {"interaction_id": result["interaction_id"], "model_version": body["model_version"]}


@dataclass(frozen=True)
class Case:
    task: str
    train: dict[str, Any]
    better: bool | None  # whether the candidate is surely better; None: not known ahead
    serve: Callable[[TestClient, str], dict[str, Any]]  # one request to the family's route


GENERATION_TRAIN = {"epochs": 2, "batch_size": 4, "lora_r": 4, "max_length": 64}
NER_TRAIN = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "max_length": 32}
NER_TYPES = ["THING", "ACTION"]

CASES = [
    Case("embedding", EMBEDDING_TRAIN, None, search),
    Case("generation", GENERATION_TRAIN, None, chat),
    Case("ner", NER_TRAIN, None, extract),
    Case("fake", {"gain": 0.15}, True, score),
    Case("fake", {"gain": -0.15}, False, score),
    Case("fake-loss", {"gain": 0.15}, True, score),
    Case("fake-loss", {"gain": -0.15}, False, score),
]


def test_every_installed_family_has_a_case() -> None:
    assert {case.task for case in CASES} == set(available())


def seed(client: TestClient, case: Case, tmp_path: Path, model: Path | None) -> str:
    """The family's project with enough feedback to train; returns its name."""
    name = case.task.replace("-", "")
    if case.task == "embedding":
        queries = [(item, query) for item, texts in QUERIES.items() for query in texts]
    elif case.task not in ("generation", "ner"):
        model = make_model(tmp_path / f"{name}-base", 0.5)
        queries = [(f"item-{i}", f"query number {i}") for i in range(18)]
    base = str(model)
    created = client.post(
        "/v1/projects",
        json={
            "name": name,
            "task": case.task,
            "base_model": base,
            "training_policy": {"train": case.train, "bootstrap_samples": 300},
            "task_options": {"entity_types": NER_TYPES} if case.task == "ner" else {},
        },
    )
    assert created.status_code == 201, created.text
    if case.task == "embedding":  # items go in after the project exists
        items = [{"id": k, "text": v} for k, v in ITEMS.items()]
        assert client.put(f"/v1/projects/{name}/items", json={"items": items}).is_success
    if case.task == "generation":
        events = generation_feedback(client, name)
    elif case.task == "ner":
        events = ner_feedback(client, name)
    else:
        events = [{"kind": "label", "input": q, "items": [item]} for item, q in queries]
    sent = client.post(f"/v1/projects/{name}/feedback/batch", json={"events": events})
    assert sent.is_success, sent.text
    return name


def generation_feedback(client: TestClient, name: str) -> list[dict[str, Any]]:
    """Replies the app logged, then corrections, thumbs and a preference on them."""
    topics = ["password", "invoice", "refund", "address", "card", "order", "login", "plan"]
    events: list[dict[str, Any]] = []
    for i, topic in enumerate(topics * 2):
        prompt = f"How do I change my {topic}? ({i})"
        logged = client.post(
            f"/v1/projects/{name}/interactions",
            json={"id": f"g{i}", "input": {"prompt": prompt}, "output": {"text": "No idea."}},
        )
        assert logged.is_success, logged.text
        fixed = f"Open settings, choose {topic}, and follow the steps."
        events.append({"kind": "correction", "interaction_id": f"g{i}", "output": fixed})
        events.append({"kind": "thumb", "interaction_id": f"g{i}", "value": "down"})
    events.append(
        {
            "kind": "preference",
            "input": "How do I close my account?",
            "chosen": "Open settings, choose account, then close.",
            "rejected": "No idea.",
        }
    )
    return events


def ner_feedback(client: TestClient, name: str) -> list[dict[str, Any]]:
    """Labelled texts, then a logged extraction with a correction of what it showed."""
    things = ["password", "invoice", "refund", "address", "card", "order", "login", "plan"]
    events: list[dict[str, Any]] = []
    for i, thing in enumerate(things * 2):
        text = f"please reset my {thing} now {i}"
        start = text.index(thing)
        spans = [
            {"start": 7, "end": 12, "label": "ACTION"},
            {"start": start, "end": start + len(thing), "label": "THING"},
        ]
        events.append({"kind": "label", "input": {"text": text}, "spans": spans})
    shown = {"spans": [{"start": 0, "end": 6, "label": "THING"}]}
    logged = client.post(
        f"/v1/projects/{name}/interactions",
        json={"id": "n1", "input": {"text": "change the plan"}, "output": shown},
    )
    assert logged.is_success, logged.text
    edits = [
        {"op": "relabel", "start": 0, "end": 6, "label": "ACTION"},
        {"op": "add", "start": 11, "end": 15, "label": "THING"},
    ]
    events.append({"kind": "correction", "interaction_id": "n1", "output": {"edits": edits}})
    return events


def train(store: Store, settings: Settings, name: str) -> jobs.Job:
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
    execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        return jobs.get_job(session, job.id)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.task}-{c.train.get('gain', 'real')}")
def test_the_loop_runs_every_family(
    case: Case,
    client: TestClient,
    store: Store,
    settings: Settings,
    tmp_path: Path,
    tiny_model: Path,
    tiny_llama: Path,
) -> None:
    task: Task = get_task(case.task)
    base = {"embedding": tiny_model, "generation": tiny_llama, "ner": tiny_model}.get(case.task)
    name = seed(client, case, tmp_path, base)
    task.check_trainable(read_project(store, name))  # enough data: no error

    job = train(store, settings, name)

    assert job.state == "succeeded", job.error
    with store.read() as session:
        project = get_project(session, name)
        v1 = list_versions(session, project.id)[-1]
        champion = resolve(session, project, "champion")
    metrics, gate = v1.metrics, v1.gate
    assert v1.number == 1 and metrics["primary"] == task.primary_metric
    assert metrics["higher_is_better"] is task.greater_is_better
    candidate, base = (
        metrics["candidate"][task.primary_metric],
        metrics["base"][task.primary_metric],
    )
    improved = candidate > base if task.greater_is_better else candidate < base
    if case.better is not None:
        assert improved is case.better
        assert gate["passed"] is case.better, gate["reason"]
        assert (champion.number == 1) is case.better
    else:
        assert gate["passed"] is (champion.number == 1)
    if not task.greater_is_better:
        assert "lower is better" in gate["reason"]

    # serve: the champion answers through the family's own route and the shared serving
    # (version routing, model loading and preparing, interaction logging)
    assert isinstance(task.load(artifacts.fetch(settings, champion.artifact_uri)), Predictor)
    served = case.serve(client, name)
    interaction = served["interaction_id"]
    assert served["model_version"] == f"v{champion.number}"
    assert client.get(f"/v1/projects/{name}/interactions/{interaction}").is_success
    thumb = client.post(
        f"/v1/projects/{name}/feedback",
        json={"kind": "thumb", "interaction_id": interaction, "value": "up"},
    )
    assert thumb.is_success, thumb.text
    record = read_project(store, name).feedback[-1]
    assert record.kind == "thumb" and record.interaction is not None
    assert record.interaction.id == interaction
    assert record.interaction.model_version == f"v{champion.number}"
    assert record.trainable and record.effective_reward > 0

    # review: what was served next is queued, with how the family lets a reviewer rewrite
    # it; the unchanged text is either stored as an ordinary event or refused with a reason
    again = case.serve(client, name)["interaction_id"]
    queue = client.get(f"/v1/projects/{name}/review", params={"ranking": "recent"}).json()
    (item,) = [i for i in queue["items"] if i["interaction"]["id"] == again]
    if item["edit"] is not None:
        assert {type(item["edit"][k]) for k in ("action", "text", "hint")} == {str}
        text = {"text": item["edit"]["text"]}
        answer = client.post(f"/v1/projects/{name}/review/{again}", json=text)
        assert answer.status_code in (201, 422), answer.text
        if answer.status_code == 201:
            stored = read_project(store, name).feedback[-1].interaction
            assert stored is not None and stored.id == again
        else:
            assert answer.json()["message"]
