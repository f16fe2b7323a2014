"""`POST /v1/embeddings` through the official `openai` client against `fineloop serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from conftest import LiveServer
from fineloop.tasks.embedding.predict import BF16_MIN_COSINE, EmbeddingPredictor

TEXTS = ["reset my password", "my card is lost or stolen", "cancel the subscription plan"]


@pytest.fixture
def api(live_server: LiveServer, tiny_model: Path) -> Iterator[openai.OpenAI]:
    created = httpx.post(
        f"{live_server.url}/v1/projects",
        json={"name": "faq", "task": "embedding", "base_model": str(tiny_model)},
    )
    assert created.status_code == 201, created.text
    with openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_embeddings_match_the_model_in_both_encodings_and_truncate(
    api: openai.OpenAI, tiny_model: Path
) -> None:
    fp32 = EmbeddingPredictor(str(tiny_model))
    expected, tokens = fp32.encode(TEXTS), fp32.count_tokens(TEXTS)

    as_float = api.embeddings.create(model="faq", input=TEXTS, encoding_format="float")
    as_base64 = api.embeddings.create(model="faq:champion", input=TEXTS)  # client default

    rows = []
    for response in (as_float, as_base64):
        got = np.array([row.embedding for row in response.data])
        assert [row.index for row in response.data] == [0, 1, 2]
        assert got.shape == expected.shape
        # serving may use bf16 autocast, only where it agrees with fp32 to this cosine
        assert np.sum(got * expected, axis=1).min() >= BF16_MIN_COSINE
        assert response.model == "faq:v0"
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(tokens)
        rows.append(got)
    assert np.allclose(rows[0], rows[1], atol=1e-7)  # base64 carries the same float32s

    full = api.embeddings.create(model="faq:v0", input=TEXTS[0], encoding_format="float")
    short = api.embeddings.create(
        model="faq", input=TEXTS[0], dimensions=8, encoding_format="float"
    )

    head = np.array(full.data[0].embedding[:8])
    got = np.array(short.data[0].embedding)
    assert len(full.data) == 1 and len(got) == 8
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(got, head / np.linalg.norm(head), atol=1e-5)


def test_errors_come_in_openai_shape(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown_project:
        api.embeddings.create(model="nope", input="hi")
    with pytest.raises(openai.NotFoundError) as unknown_version:
        api.embeddings.create(model="faq:v9", input="hi")
    with pytest.raises(openai.UnprocessableEntityError) as tokens:
        api.embeddings.create(model="faq", input=[[101, 2023, 102]])
    with pytest.raises(openai.UnprocessableEntityError) as too_wide:
        api.embeddings.create(model="faq", input="hi", dimensions=4096)

    assert "unknown project 'nope'" in unknown_project.value.message
    assert unknown_project.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "'v9'" in unknown_version.value.message
    assert "token arrays are not supported" in tokens.value.message
    assert tokens.value.body["param"] == "input"  # type: ignore[index]
    assert "exceeds the model's 32" in too_wide.value.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "faq", "input": []}, "input is empty"),
        ({"model": "faq", "input": ["ok", ""]}, "input[1] is an empty string"),
        ({"model": "faq", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x"}, "model"),
        ({"model": "faq", "input": [{"text": "x"}]}, "list of strings"),
        ({"model": "faq", "input": [["x"]]}, "list of strings"),
        ({"model": "faq", "input": [1, 2, 3]}, "token arrays are not supported"),
    ],
)
def test_bad_bodies_are_422_in_openai_shape(
    client: TestClient, tiny_model: Path, body: dict[str, object], needle: str
) -> None:
    client.post(
        "/v1/projects", json={"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    )

    response = client.post("/v1/embeddings", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


def test_another_task_project_is_not_an_embedding_model(client: TestClient) -> None:
    client.post("/v1/projects", json={"name": "chat", "task": "fake"})

    response = client.post("/v1/embeddings", json={"model": "chat", "input": "hi"})

    assert response.status_code == 422
    assert "'fake' project" in response.json()["error"]["message"]
