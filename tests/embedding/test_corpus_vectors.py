"""Corpus vectors by (model identity, text hash): what is reused, what is not, and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from fineloop.tasks.embedding.corpus_vectors import (
    documents_from_cache,
    encode_corpus,
    encode_texts,
)
from fineloop.tasks.embedding.serving.persist import VectorCache, model_identity, text_key
from fineloop.tasks.encode_counts import counting
from handmade_snapshot import ITEMS

TEXTS = sorted(set(ITEMS.values()))


@pytest.fixture
def model(tiny_model: Path) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_model), device="cpu")


def test_identity_follows_the_weights_not_the_folder_or_the_stamp(
    tiny_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, copy)
    (copy / "fineloop.json").write_text("{}")
    (copy / "logs").mkdir()
    (copy / "logs" / "events").write_text("x")
    assert model_identity(copy, 64) == model_identity(tiny_model, 64) is not None
    assert model_identity(tiny_model, 32) != model_identity(tiny_model, 64)
    weights = next(copy.rglob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one bit pattern changed
    assert model_identity(copy, 64) != model_identity(tiny_model, 64)
    assert model_identity(tmp_path / "no-such-folder", 64) is None


def test_each_text_is_encoded_once_and_an_edit_only_re_encodes_itself(
    model: SentenceTransformer, tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "index"
    with counting() as first:
        vectors = encode_corpus(
            model, TEXTS + TEXTS[:3], model_path=tiny_model, folder=folder, phase="p"
        )
    assert (first["p"].encoded, first["p"].reused) == (len(TEXTS), 0)
    assert np.allclose(vectors[: len(TEXTS)], encode_texts(model, TEXTS), atol=1e-6)
    assert np.array_equal(vectors[len(TEXTS) :], vectors[:3])  # a repeated text: one vector

    edited = ["a text nobody wrote before", *TEXTS[1:]]
    with counting() as second:
        again = encode_corpus(model, edited, model_path=tiny_model, folder=folder, phase="p")
    assert (second["p"].encoded, second["p"].reused) == (1, len(TEXTS) - 1)
    assert np.array_equal(again[1:], vectors[1 : len(TEXTS)])  # read back, bit for bit


def test_a_job_does_not_reuse_vectors_of_a_less_exact_encoder(
    model: SentenceTransformer, tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "index"
    identity = model_identity(tiny_model, model.get_max_seq_length())
    assert identity is not None
    served = VectorCache.for_model(folder, identity, 32, encoder="torch-bf16")
    served.save(np.array([text_key(t) for t in TEXTS]), np.ones((len(TEXTS), 32)))
    with counting() as counts:
        vectors = encode_corpus(model, TEXTS, model_path=tiny_model, folder=folder, phase="p")
    assert counts["p"].encoded == len(TEXTS)  # the bf16 file was not trusted
    assert not np.allclose(vectors, 1.0)
    rewritten = VectorCache.for_model(folder, identity, 32)
    assert rewritten.read_encoder == "torch-fp32" and len(rewritten) == len(TEXTS)


def test_documents_from_cache_answers_library_code_then_steps_aside(
    model: SentenceTransformer, tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "index"
    encode_corpus(model, TEXTS, model_path=tiny_model, folder=folder, phase="p")
    with (
        counting() as counts,
        documents_from_cache(model, model_path=tiny_model, folder=folder, phase="mining"),
    ):
        found = model.encode_document(TEXTS, convert_to_tensor=True)
    assert counts["mining"].reused == len(TEXTS) and counts["mining"].encoded == 0
    assert tuple(found.shape) == (len(TEXTS), 32)
    assert "encode_document" not in vars(model)  # the class's method again
