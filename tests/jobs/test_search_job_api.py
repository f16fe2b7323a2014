"""`POST /v1/projects/{project}/tune`: 202 with the job, or a 4xx naming what to fix."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject, fake_plugin, fake_project

__all__ = ["fake_plugin", "fake_project"]

GAIN = {"gain": {"type": "float", "low": -0.2, "high": 0.3}}


def refused(client: TestClient, path: str, body: dict[str, Any], status: int = 422) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_a_search_is_queued_with_its_config_and_blocks_training_meanwhile(
    client: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project()
    body = {"space": GAIN, "n_trials": 3, "timeout_seconds": 60}
    response = client.post(f"/v1/projects/{name}/tune", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["kind"], job["state"], job["project"]) == ("search", "queued", name)
    search = job["config"]["search"]
    assert search["n_trials"] == 3 and search["timeout_seconds"] == 60
    assert search["space"]["gain"]["low"] == -0.2 and search["pruner"]["kind"] == "median"
    busy = refused(client, f"/v1/projects/{name}/train", {}, 409)
    assert busy["job_id"] == job["id"] and f"search job {job['id']}" in busy["message"]
    again = refused(client, f"/v1/projects/{name}/tune", body, 409)
    assert again["job_id"] == job["id"]
    listed = client.get(f"/v1/projects/{name}/jobs").json()
    assert [(j["id"], j["kind"]) for j in listed] == [(job["id"], "search")]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"space": {"gian": GAIN["gain"]}}, "space.gian", "Extra inputs are not permitted"),
        (
            {"space": {"gain": {"type": "float", "low": 1, "high": 0}}},
            "space.gain",
            "low (1.0) must not be above high (0.0)",
        ),
        ({"space": {"gain": {"type": "categorical"}}}, "space.gain", "needs `choices`"),
        ({"space": {"steps": {"type": "int", "low": 0, "high": 3}}}, "space.steps", "value 0"),
        ({"space": {"steps": {"type": "float", "low": 1, "high": 4}}}, "space.steps", "2.5"),
        ({"space": GAIN, "n_trials": 0}, "n_trials", "greater than or equal to 1"),
        ({"space": GAIN, "pruner": {"kind": "threshold"}}, "pruner", "`lower` is required"),
        ({"space": GAIN, "sampler": "grid"}, "sampler", "'tpe' or 'random'"),
        ({"space": GAIN, "enqueue": [{"steps": 2}]}, "enqueue.0.steps", "not in the search"),
        ({"space": GAIN, "train": {"gain": 0.1}}, "space.gain", "both fixed in `train`"),
        ({"space": GAIN, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({}, "space", "the fake task has no default search space"),
    ],
)
def test_a_bad_search_config_is_a_422_naming_the_field(
    client: TestClient, fake_project: MakeProject, body: dict[str, Any], field: str, says: str
) -> None:
    name = fake_project()
    error = refused(client, f"/v1/projects/{name}/tune", body)
    assert error["field"] == field if "field" in error else error["errors"][0]["field"] == field
    assert says in error["message"]
    assert client.get(f"/v1/projects/{name}/jobs").json() == []


def test_the_embedding_task_offers_a_default_space_and_checks_values_against_its_config(
    client: TestClient, project: str
) -> None:
    path = f"/v1/projects/{project}/tune"
    bad_loss = {"space": {"loss": {"type": "categorical", "choices": ["mnrl", "nope"]}}}
    error = refused(client, path, bad_loss)
    assert error["field"] == "space.loss" and "unknown loss 'nope'" in error["message"]
    error = refused(
        client, path, {"space": {"batch_size": {"type": "float", "low": 8, "high": 33}}}
    )
    assert error["field"] == "space.batch_size"
    error = refused(client, path, {"train": {"epochs": 0}})
    assert error["field"] == "train.epochs"
    # a valid config over the default space: refused only for want of feedback
    error = refused(client, path, {"n_trials": 2})
    assert error["field"] == "feedback" and "needs at least" in error["message"]
    assert refused(client, "/v1/projects/nope/tune", {}, 404)["error"] == "not_found"
