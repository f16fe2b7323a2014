"""Generation projects served: `generate` and `/v1/chat/completions` (through the official
`openai` client, streaming and not), each logging an interaction feedback attaches to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI, UnprocessableEntityError

from fineloop.data import read_project

PROJECT = "assistant"
ASK = [{"role": "user", "content": "Say something about the sea."}]


@pytest.fixture
def assistant(client: TestClient, tiny_llama: Path) -> str:
    body = {"name": PROJECT, "task": "generation", "base_model": str(tiny_llama)}
    created = client.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text
    return PROJECT


@pytest.fixture
def openai_client(client: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/v1/projects/{PROJECT}/generate", json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_generate_is_greedy_by_default_and_logs_the_interaction(
    client: TestClient, assistant: str
) -> None:
    first = _generate(client, messages=ASK, max_tokens=8)
    again = _generate(client, messages=ASK, max_tokens=8)
    assert first["text"] == again["text"]  # temperature 0: deterministic
    assert first["model_version"] == "v0" and first["variant"] is None
    assert 0 < first["usage"]["completion_tokens"] <= 8
    total = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert first["usage"]["total_tokens"] == total
    logged = client.get(f"/v1/projects/{PROJECT}/interactions/{first['interaction_id']}")
    shown = logged.json()
    assert shown["input"] == {"messages": ASK}
    assert shown["output"]["text"] == first["text"]
    assert shown["model_version"] == "v0" and shown["metadata"]["endpoint"] == "generate"


def test_a_correction_on_a_served_reply_reaches_the_builder(
    client: TestClient, assistant: str
) -> None:
    served = _generate(client, prompt="Name a colour.", max_tokens=4)
    sent = client.post(
        f"/v1/projects/{PROJECT}/feedback",
        json={
            "kind": "correction",
            "interaction_id": served["interaction_id"],
            "output": {"text": "Blue."},
        },
    )
    assert sent.is_success, sent.text
    (record,) = read_project(client.app.state.store, PROJECT).feedback  # type: ignore[attr-defined]
    assert record.interaction is not None
    assert record.interaction.input == {"prompt": "Name a colour."}
    assert record.interaction.output["text"] == served["text"]


def test_chat_completions_through_the_openai_client(
    client: TestClient, assistant: str, openai_client: OpenAI
) -> None:
    done = openai_client.chat.completions.create(
        model=PROJECT,
        messages=ASK,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    same = _generate(client, messages=ASK, max_tokens=8)
    assert done.choices[0].message.content == same["text"]
    assert done.model == f"{PROJECT}:v0"
    assert done.id.startswith("chatcmpl-")
    interaction = done.id.removeprefix("chatcmpl-")
    logged = client.get(f"/v1/projects/{PROJECT}/interactions/{interaction}").json()
    assert logged["metadata"]["endpoint"] == "chat.completions"
    assert logged["output"]["text"] == same["text"]
    assert done.usage is not None and done.usage.completion_tokens > 0


def test_streamed_chunks_join_to_the_whole_reply(
    client: TestClient, assistant: str, openai_client: OpenAI
) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model=f"{PROJECT}:champion",
            messages=ASK,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _generate(client, messages=ASK, max_tokens=8)["text"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"} and finishes.count(None) == len(finishes) - 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    interaction = chunks[0].id.removeprefix("chatcmpl-")
    logged = client.get(f"/v1/projects/{PROJECT}/interactions/{interaction}").json()
    assert logged["output"]["text"] == text  # logged once the stream ended


def test_bad_requests_get_openai_errors(
    client: TestClient, assistant: str, openai_client: OpenAI
) -> None:
    with pytest.raises(UnprocessableEntityError) as refused:
        openai_client.chat.completions.create(
            model=PROJECT,
            messages=ASK,
            n=2,  # type: ignore[arg-type]
        )
    assert refused.value.body["param"] == "n"  # type: ignore[index]
    missing = client.post("/v1/chat/completions", json={"model": "nope", "messages": ASK})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    both = client.post(f"/v1/projects/{PROJECT}/generate", json={"prompt": "hi", "messages": ASK})
    assert both.status_code == 422 and "either messages or prompt" in both.text
    boolean = client.post(
        f"/v1/projects/{PROJECT}/generate", json={"prompt": "hi", "max_tokens": True}
    )
    assert boolean.status_code == 422


def test_generation_routes_refuse_other_projects_and_vice_versa(
    client: TestClient, assistant: str, tiny_model: Path
) -> None:
    body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    assert client.post("/v1/projects", json=body).status_code == 201
    wrong = client.post("/v1/projects/faq/generate", json={"prompt": "hi"})
    assert wrong.status_code == 422 and "'embedding' project" in wrong.json()["message"]
    search = client.post(f"/v1/projects/{PROJECT}/search", json={"query": "hi"})
    assert search.status_code == 422 and "'generation' project" in search.json()["message"]
