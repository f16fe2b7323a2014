"""Serving on ONNX Runtime: the exported graph gives torch's vectors, is exported once per
model content, and is used only when it agrees; "torch" never exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from fineloop.api import create_app
from fineloop.config import get_settings
from fineloop.store import Store
from fineloop.tasks.embedding import onnx_encoder, predict
from fineloop.tasks.embedding.predict import ONNX_MIN_COSINE, EmbeddingPredictor
from serving.helpers import CATALOG, items, search

TEXTS = [
    "select the wall",
    "the roof and the window of the second floor",
    "invite a colleague to the team",
    "refund",
    "reset my password because i forgot it and the email never came",
    "wall " * 100,  # past the model's 64 tokens: truncated alike
]


def graphs(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.onnx"))


def test_the_onnx_graph_gives_torch_vectors_in_the_callers_order(
    tiny_model: Path, tmp_path: Path
) -> None:
    predictor = EmbeddingPredictor(str(tiny_model))
    texts = TEXTS * 3  # more than one batch of 4, lengths out of order
    exact = predictor.encode(texts, batch_size=4)

    backend = predictor.choose_encoder("auto", tmp_path / "onnx")
    fast = predictor.encode(texts, batch_size=4)

    assert backend == predictor.backend == "onnx"
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosines = fast @ exact.T
    assert np.diag(cosines).min() >= ONNX_MIN_COSINE
    assert (cosines[0, 1:5] < 0.999).all()  # different texts: the order is what is checked


def test_a_graph_is_exported_once_per_model_content(tiny_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "onnx"
    EmbeddingPredictor(str(tiny_model)).choose_encoder("auto", cache)
    [graph] = graphs(cache)
    exported = graph.stat().st_ino  # a new export replaces the file: a new inode
    copy = tmp_path / "same-model"
    shutil.copytree(tiny_model, copy)

    EmbeddingPredictor(str(copy)).choose_encoder("auto", cache)
    changed = EmbeddingPredictor(str(copy))
    changed.model[0].auto_model.embeddings.word_embeddings.weight.data.mul_(2)
    changed.model.save(str(copy))
    EmbeddingPredictor(str(copy)).choose_encoder("auto", cache)

    assert graph in graphs(cache)
    assert graph.stat().st_ino == exported  # the copy reused it
    assert len(graphs(cache)) == 2  # changed weights: a graph of their own


def test_serving_threads_size_the_onnx_pool(tiny_model: Path, tmp_path: Path) -> None:
    capped, default = EmbeddingPredictor(str(tiny_model)), EmbeddingPredictor(str(tiny_model))
    capped.threads = 1

    capped.choose_encoder("onnx", tmp_path / "onnx")
    default.choose_encoder("onnx", tmp_path / "onnx")

    assert capped.onnx is not None and capped.onnx.threads == 1
    assert default.onnx is not None and default.onnx.threads == 0


def test_only_the_most_recently_used_graphs_are_kept(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_encoder, "KEEP_GRAPHS", 2)
    cache = tmp_path / "onnx"
    folders = []
    for scale in (2.0, 3.0, 4.0):  # three versions of the model
        version = tmp_path / f"v{scale}"
        shutil.copytree(tiny_model, version)
        model = EmbeddingPredictor(str(version)).model
        model[0].auto_model.embeddings.word_embeddings.weight.data.mul_(scale)
        model.save(str(version))
        EmbeddingPredictor(str(version)).choose_encoder("onnx", cache)
        folders.append(graphs(cache))

    assert [len(found) for found in folders] == [1, 2, 2]
    assert set(folders[0]) - set(folders[2])  # the first version's graph went first


def test_torch_backend_never_exports(tiny_model: Path, tmp_path: Path) -> None:
    predictor = EmbeddingPredictor(str(tiny_model))

    backend = predictor.choose_encoder("torch", tmp_path / "onnx")

    assert backend in ("torch-fp32", "torch-bf16") and predictor.onnx is None
    assert not (tmp_path / "onnx").exists()


def test_a_graph_that_disagrees_serves_only_when_not_required(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict, "ONNX_MIN_COSINE", 1.5)  # no graph can agree this well
    fallback = EmbeddingPredictor(str(tiny_model))

    assert fallback.choose_encoder("auto", tmp_path / "onnx").startswith("torch")
    with pytest.raises(ValueError, match="agrees with torch only to a cosine of"):
        EmbeddingPredictor(str(tiny_model)).choose_encoder("onnx", tmp_path / "onnx")


def test_search_ranks_alike_on_onnx_and_torch(tiny_model: Path, tmp_path: Path) -> None:
    answers = {}
    for backend in ("onnx", "torch"):
        settings = get_settings(data_dir=tmp_path / backend, serving_backend=backend)
        store = Store.open(settings)
        with TestClient(create_app(settings, store)) as client:
            project = {"name": "shop", "task": "embedding", "base_model": str(tiny_model)}
            assert client.post("/v1/projects", json=project).status_code == 201
            client.put("/v1/projects/shop/items", json={"items": items(CATALOG)})
            answers[backend] = search(client, "shop", "the red wall", k=5)["items"]
            state = client.app.state.serving
            served = state.serve("shop")
            assert state.models.get(served.version, "embedding").backend.startswith(backend)
        store.close()

    assert [item["id"] for item in answers["onnx"]] == [item["id"] for item in answers["torch"]]
    for fast, exact in zip(answers["onnx"], answers["torch"], strict=True):
        assert fast["score"] == pytest.approx(exact["score"], abs=1e-4)
    assert graphs(tmp_path / "onnx" / "onnx") and not (tmp_path / "torch" / "onnx").exists()


def test_serving_backend_takes_only_known_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="serving_backend"):
        get_settings(data_dir=tmp_path, serving_backend="tensorrt")
    assert get_settings(data_dir=tmp_path).serving_backend == "auto"


def test_a_required_onnx_graph_that_cannot_serve_is_a_4xx_naming_the_model(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict, "ONNX_MIN_COSINE", 1.5)  # no graph can agree this well
    settings = get_settings(data_dir=tmp_path / "data", serving_backend="onnx")
    store = Store.open(settings)
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        project = {"name": "shop", "task": "embedding", "base_model": str(tiny_model)}
        assert client.post("/v1/projects", json=project).status_code == 201
        client.put("/v1/projects/shop/items", json={"items": items(CATALOG)})
        response = client.post("/v1/projects/shop/search", json={"query": "wall", "k": 3})
    store.close()

    assert response.status_code == 422, response.text
    assert "cannot load the model" in response.text
    assert "agrees with torch only to a cosine of" in response.text
