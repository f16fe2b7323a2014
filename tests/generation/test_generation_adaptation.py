"""Online adaptation between retrains: corrections reused at once for the same and
near-identical prompts (exact, direct, few_shot per the project's serving policy), marked
in the response and the logged interaction; unrelated prompts untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.serving import get_serving
from fineloop.store.projects import get_project
from fineloop.tasks.generation.adapt_memory import CorrectionMemory

PROJECT = "helpdesk"
ASKED = "How do I reset my password?"
CORRECTION = "Open Settings, choose Security, then Reset password."
UNRELATED = "Write a short poem about the autumn sea."


def _create(client: TestClient, tiny_llama: Path, **policy: Any) -> None:
    body = {
        "name": PROJECT,
        "task": "generation",
        "base_model": str(tiny_llama),
        "serving_policy": policy,
    }
    created = client.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text


def _generate(client: TestClient, prompt: str, **extra: Any) -> dict[str, Any]:
    answer = client.post(
        f"/v1/projects/{PROJECT}/generate",
        json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 6, **extra},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _settle(client: TestClient) -> None:
    """Wait for the background refreshes the feedback hook started."""
    get_serving(client.app).background.join()


def _correct(client: TestClient, interaction_id: str, text: str = CORRECTION) -> int:
    sent = client.post(
        f"/v1/projects/{PROJECT}/feedback",
        json={"kind": "correction", "interaction_id": interaction_id, "output": text},
    )
    assert sent.is_success, sent.text
    _settle(client)
    feedback_id: int = sent.json()["id"]
    return feedback_id


def _logged(client: TestClient, interaction_id: str) -> dict[str, Any]:
    found = client.get(f"/v1/projects/{PROJECT}/interactions/{interaction_id}")
    assert found.status_code == 200, found.text
    shown: dict[str, Any] = found.json()
    return shown


def test_exact_reuse_returns_the_correction_and_logs_it(
    client: TestClient, tiny_llama: Path
) -> None:
    _create(client, tiny_llama, reuse_corrections="exact")
    first = _generate(client, ASKED)
    assert first["adapted"] is None and first["text"] != CORRECTION
    feedback_id = _correct(client, first["interaction_id"])  # memory exists: hook refresh

    again = _generate(client, "  how do i RESET my password  ")  # case, punctuation, spaces
    assert again["text"] == CORRECTION
    assert again["adapted"] == {"mode": "exact", "feedback_ids": [feedback_id], "similarity": 1.0}
    assert again["usage"]["prompt_tokens"] == 0  # no generation
    logged = _logged(client, again["interaction_id"])
    assert logged["output"]["text"] == CORRECTION
    assert logged["output"]["adapted"]["mode"] == "exact"
    assert logged["output"]["adapted"]["feedback_ids"] == [feedback_id]

    paraphrase = _generate(client, "How can I reset my password?")  # exact only: no reuse
    assert paraphrase["adapted"] is None

    chat = client.post(
        "/v1/chat/completions",
        json={"model": PROJECT, "messages": [{"role": "user", "content": ASKED}], "stream": True},
    )
    assert chat.status_code == 200, chat.text
    assert '"mode": "exact"' in chat.text and "Reset password." in chat.text


def test_direct_reuse_by_similarity_leaves_unrelated_prompts_alone(
    client: TestClient, tiny_llama: Path
) -> None:
    _create(client, tiny_llama, reuse_corrections="direct", reuse_min_similarity=0.8)
    before = _generate(client, UNRELATED)
    first = _generate(client, ASKED)
    feedback_id = _correct(client, first["interaction_id"])

    near_prompt = "How can I reset my password?"
    near = _generate(client, near_prompt)
    assert near["text"] == CORRECTION
    assert near["adapted"]["mode"] == "direct"
    assert near["adapted"]["feedback_ids"] == [feedback_id]
    assert 0.8 <= near["adapted"]["similarity"] < 1.0

    after = _generate(client, UNRELATED)
    assert after["adapted"] is None and after["text"] == before["text"]
    assert _logged(client, after["interaction_id"])["output"].get("adapted") is None

    completion = client.post(
        "/v1/chat/completions",
        json={"model": PROJECT, "messages": [{"role": "user", "content": near_prompt}]},
    )
    assert completion.status_code == 200, completion.text
    body = completion.json()
    assert body["choices"][0]["message"]["content"] == CORRECTION
    assert body["adapted"]["mode"] == "direct" and body["usage"]["total_tokens"] == 0


def test_a_thumbs_down_on_a_reused_answer_retracts_it(client: TestClient, tiny_llama: Path) -> None:
    _create(client, tiny_llama, reuse_corrections="exact")
    first = _generate(client, ASKED)
    _correct(client, first["interaction_id"])
    reused = _generate(client, ASKED)
    assert reused["adapted"]["mode"] == "exact"

    down = client.post(
        f"/v1/projects/{PROJECT}/feedback",
        json={"kind": "thumb", "interaction_id": reused["interaction_id"], "value": "down"},
    )
    assert down.is_success, down.text
    _settle(client)
    assert _generate(client, ASKED)["adapted"] is None

    newer = _correct(client, first["interaction_id"], "Use the link in the login page.")
    fixed = _generate(client, ASKED)  # a newer correction is reused again
    assert fixed["text"] == "Use the link in the login page."
    assert fixed["adapted"]["feedback_ids"] == [newer]


def test_few_shot_puts_the_corrections_before_the_question(
    client: TestClient, tiny_llama: Path
) -> None:
    _create(client, tiny_llama, reuse_corrections="few_shot", adaptation_min_similarity=0.5)
    first = _generate(client, ASKED)
    plain = _generate(client, "How can I reset my password?")
    plain_unrelated = _generate(client, UNRELATED)
    feedback_id = _correct(client, first["interaction_id"])

    shot = _generate(client, "How can I reset my password?")
    assert shot["adapted"]["mode"] == "few_shot"
    assert shot["adapted"]["feedback_ids"] == [feedback_id]
    assert shot["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]  # the model read it
    assert shot["usage"]["completion_tokens"] > 0  # and wrote the answer
    logged = _logged(client, shot["interaction_id"])
    assert logged["input"]["messages"] == [
        {"role": "user", "content": "How can I reset my password?"}
    ]
    assert logged["input"]["shots"] == [{"prompt": ASKED, "completion": CORRECTION}]

    same = _generate(client, ASKED.upper())  # an exact hit is returned in every mode
    assert same["adapted"]["mode"] == "exact" and same["text"] == CORRECTION

    unrelated = _generate(client, UNRELATED)
    assert unrelated["adapted"] is None
    assert unrelated["usage"]["prompt_tokens"] == plain_unrelated["usage"]["prompt_tokens"]
    assert unrelated["text"] == plain_unrelated["text"]


def test_off_and_online_adaptation_false_reuse_nothing(
    client: TestClient, tiny_llama: Path
) -> None:
    _create(client, tiny_llama, reuse_corrections="exact", online_adaptation=False)
    first = _generate(client, ASKED)
    _correct(client, first["interaction_id"])
    assert _generate(client, ASKED)["adapted"] is None
    changed = client.patch(
        f"/v1/projects/{PROJECT}", json={"serving_policy": {"reuse_corrections": "exact"}}
    )
    assert changed.status_code == 200, changed.text
    assert _generate(client, ASKED)["adapted"]["mode"] == "exact"  # no restart needed


@pytest.mark.parametrize(
    "policy",
    [
        {"reuse_corrections": "sometimes"},
        {"reuse_min_similarity": 1.5},
        {"reuse_shots": 0},
        {"reuse_shots": 9},
    ],
)
def test_bad_reuse_policies_are_refused(client: TestClient, policy: dict[str, Any]) -> None:
    body = {"name": "bad", "task": "generation", "serving_policy": policy}
    answer = client.post("/v1/projects", json=body)
    assert answer.status_code == 422, answer.text
    assert next(iter(policy)) in answer.text


def test_the_memory_keeps_the_newest_correction_per_prompt_within_its_bound(
    client: TestClient, tiny_llama: Path
) -> None:
    _create(client, tiny_llama)
    ids = []
    for prompt, text in [("One?", "1"), ("Two?", "2"), ("one", "uno"), ("Three?", "3")]:
        event = {"kind": "correction", "input": {"prompt": prompt}, "output": {"text": text}}
        sent = client.post(f"/v1/projects/{PROJECT}/feedback", json=event)
        assert sent.is_success, sent.text
        ids.append(sent.json()["id"])
    store = client.app.state.store  # type: ignore[attr-defined]
    with store.read() as session:
        project_id = get_project(session, PROJECT).id
    memory = CorrectionMemory(project_id, max_corrections=2)
    assert memory.refresh(store, None) == 4
    view = memory.view
    assert [c.text for c in view.corrections] == ["uno", "3"]  # "one" replaced "One?"
    assert [c.feedback_id for c in view.corrections] == [ids[2], ids[3]]
    assert view.vectors is None  # no encoder: exact reuse only
    assert memory.refresh(store, None) == 0  # nothing past the watermark


def test_the_default_is_exact_and_off_when_online_adaptation_is() -> None:
    from fineloop.policies import ServingPolicy
    from fineloop.tasks.generation.adapt import mode_of

    assert mode_of(ServingPolicy()) == "exact"
    assert mode_of(ServingPolicy(online_adaptation=False, reuse_corrections="few_shot")) == "off"
