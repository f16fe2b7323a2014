"""Cost bounded by what the model reads: texts are cut to 16 characters per token of the
model's max_seq_length before the tokenizer sees them, and an embeddings request beyond
max_embedding_inputs or max_embedding_chars is a 422 that names the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fineloop.serving.versions import served_version
from fineloop.tasks.embedding.predict import CHARS_PER_TOKEN, EmbeddingPredictor
from fineloop.tasks.embedding.serving.state import embedding_serving

WORDS = "the invoice for last month was charged twice please refund one of them "


class Longest:
    """The length of the longest text the tokenizer was handed."""

    value = 0

    def note(self, texts: Any) -> None:
        batch = texts if isinstance(texts, list | tuple) else [texts]
        for entry in batch:
            for text in entry if isinstance(entry, list | tuple) else [entry]:
                if isinstance(text, str):
                    self.value = max(self.value, len(text))


def _spy_on(predictor: EmbeddingPredictor) -> Longest:
    """Make the model's own tokenizer note what it is handed (it still does the work): its
    class becomes a subclass whose __call__ notes the texts, then calls the original."""
    tokenizer = predictor.model.tokenizer
    longest = Longest()
    original = type(tokenizer)

    class Noting(original):  # type: ignore[misc, valid-type]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            longest.note(args[0] if args else kwargs.get("text"))
            return super().__call__(*args, **kwargs)

    tokenizer.__class__ = Noting
    return longest


def test_the_tokenizer_never_sees_more_than_the_model_reads(tiny_model: Path) -> None:
    predictor = EmbeddingPredictor(str(tiny_model))
    cap = predictor.max_chars
    assert cap == CHARS_PER_TOKEN * predictor.model.get_max_seq_length()
    huge = WORDS * (100_000 // len(WORDS))
    assert len(huge) > 10 * cap
    spy = _spy_on(predictor)

    vectors = predictor.encode([huge, "refund"])
    tokens = predictor.count_tokens([huge])

    assert 0 < spy.value <= cap
    # the cut changes nothing the model reads: same vector as the text's first `cap` chars
    assert np.allclose(vectors[0], predictor.encode([huge[:cap]])[0], atol=1e-6)
    assert tokens == [predictor.model.get_max_seq_length()]


def test_100_huge_inputs_are_a_422_and_under_the_bound_are_cut(
    client: TestClient, tiny_model: Path
) -> None:
    body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    assert client.post("/v1/projects", json=body).status_code == 201
    huge = WORDS * (100_000 // len(WORDS))

    refused = client.post("/v1/embeddings", json={"model": "faq", "input": [huge] * 100})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["param"] == "input" and "max_embedding_chars" in error["message"]

    too_many = client.post("/v1/embeddings", json={"model": "faq", "input": ["hi"] * 2049})
    assert too_many.status_code == 422 and "max_embedding_inputs" in too_many.text

    _, version = served_version(client.app.state.store, "faq", None)  # type: ignore[attr-defined]
    predictor = embedding_serving(client.app).predictor(version)
    spy = _spy_on(predictor)
    long = huge[:9_000]  # 100 of them: 900,000 characters, under the default 1,000,000
    answer = client.post("/v1/embeddings", json={"model": "faq", "input": [long] * 100})
    assert answer.status_code == 200, answer.text
    assert 0 < spy.value <= predictor.max_chars < len(long)
    assert answer.json()["usage"]["prompt_tokens"] == 100 * predictor.model.get_max_seq_length()


@pytest.mark.parametrize("limit", ["max_embedding_inputs", "max_embedding_chars"])
def test_the_request_bounds_are_settings(client: TestClient, tiny_model: Path, limit: str) -> None:
    body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    assert client.post("/v1/projects", json=body).status_code == 201
    app: Any = client.app
    app.state.settings = app.state.settings.model_copy(update={limit: 3})
    response = client.post("/v1/embeddings", json={"model": "faq", "input": ["a", "b", "c", "d"]})
    assert response.status_code == 422 and limit in response.json()["error"]["message"]
