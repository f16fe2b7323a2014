"""Synthetic queries for catalog items nobody picked: written by a generation model, kept
only when their item ranks in the top k for them under the current model, train split only.

The generator is a tiny random Llama and the retriever a tiny random BERT: their queries
are nonsense, but every rule (which items get queries, the round trip, the cap, the
lineage, the cache) is checked on what they produce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from generated_rows import (
    BUILD,
    CATALOG,
    FEEDBACK,
    build,
    make_project,
    rows_of,
    set_train,
    synthetic,
)

from fineloop.config import Settings
from fineloop.data.hashing import content_hash
from fineloop.errors import Invalid
from fineloop.store import Store
from fineloop.tasks.embedding.synthetic import copies, round_robin
from fineloop.tasks.embedding.synthetic_writer import QueryCache, cache_file, clean_query


def ranks(model: Path, rows: list[dict[str, Any]]) -> list[int]:
    """Where each row's item ranks among the catalog's texts for its query (0: first)."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(model))
    texts = sorted(set(CATALOG.values()))
    documents = encoder.encode(texts, normalize_embeddings=True)
    queries = encoder.encode([r["anchor"] for r in rows], normalize_embeddings=True)
    scores = queries @ documents.T
    own = np.array([scores[n, texts.index(r["positive"])] for n, r in enumerate(rows)])
    return [int(k) for k in (scores > own[:, None]).sum(axis=1)]


def test_synthetic_rows_are_train_only_for_items_without_feedback_and_pass_the_round_trip(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    make_project(store, synthetic(tiny_llama, round_trip_top_k=1, share=0.9))

    built = build(store, settings, tmp_path / "snap", tiny_model)
    rows = rows_of(built)
    made = [r for r in rows if r["synthetic"]]
    real = [r for r in rows if not r["synthetic"]]

    stats = built.stats
    assert stats["synthetic_items"] == 7  # the items nobody picked
    assert stats["synthetic_items_written"] == 7 and stats["synthetic_items_cached"] == 0
    assert stats["synthetic_kept"] == len(made) == stats["synthetic_rows"] > 0
    assert stats["synthetic_dropped_round_trip"] > 0  # k=1 keeps only first-ranked items
    assert stats["synthetic_generated"] == (
        stats["synthetic_kept"]
        + stats["synthetic_dropped_round_trip"]
        + stats["synthetic_dropped_user_query"]
        + stats["synthetic_dropped_copy"]
        + stats["synthetic_dropped_share"]
    )
    assert {r["split"] for r in made} == {"train"}
    assert {r["positive_id"] for r in made} <= set(CATALOG) - set(FEEDBACK.values())
    assert all(r["generator"] == str(tiny_llama) for r in made)
    assert all(r["prompt_hash"].startswith("sha256:") and r["score"] == 1.0 for r in made)
    assert all(r["query_group"].startswith("synthetic:") and not r["feedback_ids"] for r in made)
    assert ranks(tiny_model, made) == [0] * len(made)  # the round trip at k=1
    assert all(len(r["negative_ids"]) <= 2 for r in made)
    assert any(r["negative_ids"] for r in made)  # mined as for real rows
    assert not any(r["positive_id"] in r["negative_ids"] for r in made)
    assert stats["mined_negatives"] > 0  # real rows are mined as before
    # lineage on real rows: not synthetic, no generator; every feedback pair is there
    assert {(r["anchor"], r["positive_id"]) for r in real} == set(FEEDBACK.items())
    assert all(r["generator"] == "" and r["prompt_hash"] == "" for r in real)
    assert built.config["synthetic_queries"]["prompt"].count("{text}") == 1
    assert built.config["synthetic_generator_identity"]


def test_share_caps_synthetic_rows_in_train(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    make_project(store, synthetic(tiny_llama, round_trip_top_k=len(CATALOG), share=0.2))

    built = build(store, settings, tmp_path / "snap", tiny_model)
    train = [r for r in rows_of(built) if r["split"] == "train"]
    made = [r for r in train if r["synthetic"]]

    real_train = len(train) - len(made)
    assert len(made) == int(0.2 * real_train / 0.8)  # k = the whole catalog: all pass
    assert built.stats["synthetic_dropped_round_trip"] == 0
    assert built.stats["synthetic_dropped_share"] > 0
    # spread over items round-robin: no item has two queries while another has none
    per_item = [sum(r["positive_id"] == i for r in made) for i in {r["positive_id"] for r in made}]
    assert max(per_item) - min(per_item) <= 1


def test_the_cache_makes_a_second_build_write_nothing_and_a_cut_cache_resumes(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    make_project(store, synthetic(tiny_llama, round_trip_top_k=len(CATALOG)))

    first = build(store, settings, tmp_path / "one", tiny_model)
    second = build(store, settings, tmp_path / "two", tiny_model)

    assert first.stats["synthetic_items_written"] == 7
    assert second.stats["synthetic_items_written"] == 0
    assert second.stats["synthetic_items_cached"] == 7
    assert second.id == first.id  # same feedback, same cache: same snapshot

    # a build killed while appending: the file ends with half a line
    cache = cache_file(settings, "faq")
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    third = build(store, settings, tmp_path / "three", tiny_model)
    assert third.stats["synthetic_items_written"] == 5  # only the ones it lost
    fourth = build(store, settings, tmp_path / "four", tiny_model)
    assert fourth.stats["synthetic_items_written"] == 0

    # a different prompt is a different cache entry for every item
    set_train(
        store, synthetic(tiny_llama, round_trip_top_k=len(CATALOG), prompt="Query for: {text}")
    )
    fifth = build(store, settings, tmp_path / "five", tiny_model)
    assert fifth.stats["synthetic_items_written"] == 7 and fifth.id != first.id


def test_synthetic_off_leaves_the_snapshot_as_it_was(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    make_project(store, {})
    plain = build(store, settings, tmp_path / "plain", tiny_model)
    set_train(store, synthetic(tiny_llama, enabled=False))
    off = build(store, settings, tmp_path / "off", tiny_model)

    assert off.id == plain.id
    assert "synthetic_queries" not in off.config
    assert not any(key.startswith("synthetic") for key in off.stats)
    assert not cache_file(settings, "faq").exists()
    rows = rows_of(off)
    assert not any(r["synthetic"] for r in rows)
    # the id is the formula of snapshots before synthetic queries: rows without lineage
    lineage = ("synthetic", "generator", "prompt_hash")
    before = content_hash(
        {
            "project": "faq",
            "config": {**BUILD.model_dump(mode="json"), "seed": 13},
            "rows": [{k: v for k, v in r.items() if k not in lineage} for r in rows],
            "corpus": sorted(CATALOG.items()),
        }
    )
    assert off.id == before


def test_a_bad_setting_is_a_422_naming_the_field(client: TestClient, project: str) -> None:
    for setting, named in [
        ({"enabeld": True}, "train.synthetic_queries.enabeld"),
        ({"share": 0.95}, "train.synthetic_queries.share"),
        ({"queries_per_item": 0}, "train.synthetic_queries.queries_per_item"),
        ({"prompt": "no place for the item"}, "train.synthetic_queries.prompt"),
        ({"prompt": "{text}" * 400}, "train.synthetic_queries.prompt"),
    ]:
        body = {"training_policy": {"train": {"synthetic_queries": setting}}}
        response = client.patch(f"/v1/projects/{project}", json=body)
        assert response.status_code == 422, (setting, response.text)
        assert named in response.text
    good = {"training_policy": {"train": {"synthetic_queries": {"enabled": True, "share": 0.3}}}}
    response = client.patch(f"/v1/projects/{project}", json=good)
    assert response.status_code == 200, response.text
    assert response.json()["training_policy"]["train"]["synthetic_queries"]["share"] == 0.3


def test_a_generator_that_is_not_a_model_is_invalid(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path
) -> None:
    make_project(store, synthetic(tmp_path / "nowhere"))
    with pytest.raises(Invalid) as error:
        build(store, settings, tmp_path / "snap", tiny_model)
    assert error.value.field == "train.synthetic_queries.generator"


def test_answers_are_cut_to_a_query() -> None:
    assert clean_query('Query: "reset my password"\nmore text', 100) == "reset my password"
    assert clean_query("\n\n  lost   card  ", 100) == "lost card"
    assert clean_query("search query - invoice", 100) == "invoice"
    assert clean_query(" ?! ", 100) is None
    assert clean_query("a very long query", 6) == "a very"
    assert clean_query("how do i pay? Click on pay and then", 100) == "how do i pay?"
    assert clean_query("A user would type: card fees", 100) == "card fees"
    assert clean_query("Here is a more detailed answer:", 100) is None
    text = "Mitochondrial DNA mutations accumulate with age in human skeletal muscle."
    assert copies("mitochondrial DNA mutations accumulate with age in human", text)
    assert not copies("DNA mutations with age", text)  # short: a fair keyword query
    assert not copies("do mitochondrial DNA mutations accumulate with age in muscle", text)
    kept = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("c", "c2")]
    assert round_robin(kept, 4) == [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")]


@pytest.mark.slow  # a short training run: the readers take the lineage columns in stride
def test_train_and_evaluate_read_a_snapshot_with_synthetic_rows(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    from fineloop.tasks.base import NullSink
    from fineloop.tasks.embedding import EmbeddingTask

    make_project(store, synthetic(tiny_llama, round_trip_top_k=len(CATALOG)))
    built = build(store, settings, tmp_path / "snap", tiny_model)
    assert built.stats["synthetic_rows"] > 0
    task = EmbeddingTask()
    config = task.train_config({"max_steps": 2, "batch_size": 4, "early_stopping_patience": None})

    out = task.train(built.path, str(tiny_model), config, tmp_path / "model", NullSink())

    assert 0 <= task.evaluate(str(out), built.path).metrics["ndcg@10"] <= 1


def test_the_cache_survives_a_line_cut_inside_a_character(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    QueryCache(path).add({"a": ["café au lait"], "b": ["naïve query"]})
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.index("ï".encode()) + 1])  # killed mid-character

    cache = QueryCache(path)
    assert cache.entries == {"a": ["café au lait"]}
    cache.add({"b": ["naïve query"]})
    assert QueryCache(path).entries == {"a": ["café au lait"], "b": ["naïve query"]}
