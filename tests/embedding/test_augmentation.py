"""Augmentation: paraphrases of train queries for items with few examples, written by a
generation model and kept only when their item still ranks in the top k for them.

The same tiny random Llama and BERT as test_synthetic_queries.py: the paraphrases are
nonsense, but which queries get them, where they go and what they carry is checked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from generated_rows import CATALOG, FEEDBACK, build, make_project, rows_of, set_train

from fineloop.config import Settings
from fineloop.data.splits import normalize_query
from fineloop.store import Store


def augmentation(generator: Path, **settings: Any) -> dict[str, Any]:
    values = {"enabled": True, "generator": str(generator), "paraphrases_per_query": 4}
    return {"augmentation": {**values, "temperature": 1.0, **settings}}


def test_paraphrases_go_to_train_in_their_source_group_for_items_with_few_examples(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    train = augmentation(tiny_llama, max_item_examples=1, round_trip_top_k=len(CATALOG), share=0.9)
    make_project(store, train)

    built = build(store, settings, tmp_path / "snap", tiny_model)
    rows = rows_of(built)
    real = [r for r in rows if not r["synthetic"]]
    made = [r for r in rows if r["synthetic"]]

    real_train = [r for r in real if r["split"] == "train"]
    per_item = Counter(r["positive_id"] for r in real_train)
    sources = {r["anchor"] for r in real_train if per_item[r["positive_id"]] <= 1}
    stats = built.stats
    assert stats["augment_queries"] == len(sources) > 0
    assert stats["augment_kept"] == stats["augment_rows"] == len(made) > 0
    assert stats["augment_generated"] == (
        stats["augment_kept"]
        + stats["augment_dropped_round_trip"]
        + stats["augment_dropped_user_query"]
        + stats["augment_dropped_copy"]
        + stats["augment_dropped_share"]
    )
    assert {r["split"] for r in made} == {"train"}
    users = {normalize_query(q) for q in FEEDBACK}
    by_group = {(r["query_group"], r["positive_id"]): r for r in real_train}
    for row in made:
        assert per_item[row["positive_id"]] <= 1  # only items with few examples
        source = by_group[row["query_group"], row["positive_id"]]  # the source's group
        assert source["anchor"] in sources
        assert row["feedback_ids"] == source["feedback_ids"] and row["score"] == source["score"]
        assert normalize_query(row["anchor"]) not in users
        assert row["generator"] == str(tiny_llama) and row["prompt_hash"].startswith("sha256:")
    assert "synthetic_rows" not in stats  # synthetic queries stay off
    assert built.config["augmentation"]["max_item_examples"] == 1

    again = build(store, settings, tmp_path / "again", tiny_model)
    assert again.stats["augment_queries_written"] == 0 and again.id == built.id


def test_both_kinds_together_and_off_again(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path, tiny_llama: Path
) -> None:
    make_project(store, {})
    plain = build(store, settings, tmp_path / "plain", tiny_model)
    both = {
        **augmentation(tiny_llama, round_trip_top_k=len(CATALOG)),
        "synthetic_queries": {"enabled": True, "generator": str(tiny_llama)},
    }
    set_train(store, {**both, "synthetic_queries": {**both["synthetic_queries"], "share": 0.9}})
    built = build(store, settings, tmp_path / "both", tiny_model)
    hashes = {r["prompt_hash"] for r in rows_of(built) if r["synthetic"]}
    assert len(hashes) == 2  # paraphrases and synthetic queries, told apart by their prompt
    assert built.stats["augment_rows"] > 0 and built.stats["synthetic_rows"] > 0

    set_train(store, augmentation(tiny_llama, enabled=False))
    assert build(store, settings, tmp_path / "off", tiny_model).id == plain.id


def test_a_bad_augmentation_setting_is_a_422_naming_the_field(
    client: TestClient, project: str
) -> None:
    for setting, named in [
        ({"prompt": "no place for it"}, "train.augmentation.prompt"),
        ({"paraphrases_per_query": 9}, "train.augmentation.paraphrases_per_query"),
        ({"shares": 0.1}, "train.augmentation.shares"),
    ]:
        body = {"training_policy": {"train": {"augmentation": setting}}}
        response = client.patch(f"/v1/projects/{project}", json=body)
        assert response.status_code == 422, (setting, response.text)
        assert named in response.text
