"""The embedding dataset builder: feedback in the store → a content-hashed snapshot on disk.

Each test writes a few items, interactions and feedback events through the same functions
the API uses, builds, and reads the saved folder back with `datasets`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.errors import Invalid, NotFound
from fineloop.feedback.events import EventEnvelope, LabelEvent, SelectionEvent, ThumbEvent
from fineloop.feedback.rewards import RewardPolicy
from fineloop.operations import store_feedback, store_interactions, store_items
from fineloop.schemas import InteractionCreate, ItemIn, ProjectCreate
from fineloop.snapshots import (
    build_and_publish,
    get_snapshot,
    list_snapshots,
    snapshot_public,
)
from fineloop.store import Store
from fineloop.store.projects import create_project, get_project
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.embedding.build import BuildConfig, build_snapshot
from fineloop.tasks.embedding.mining import mine

CATALOG = {
    "pw": "reset your password from the login page",
    "email": "change the email of your account",
    "delete": "delete or close your account",
    "export": "export your data to a file",
    "card": "block a lost or stolen card",
    "refund": "get a refund for a payment",
    "transfer": "money transfer to another account",
    "invoice": "find an invoice or bill",
    "cancel": "cancel your subscription plan",
    "invite": "invite a colleague to your team",
    "wall-1": "outer wall",
    "wall-2": "inner wall",
    "door": "front door",
    "window": "roof window",
}
NO_MINING = BuildConfig(mine_negatives=False, min_examples=1)


def make_project(store: Store, name: str = "faq", **policy: Any) -> None:
    with store.write() as session:
        spec = ProjectCreate(name=name, task="embedding", reward_policy=RewardPolicy(**policy))
        create_project(session, spec)
    store_items(store, name, [ItemIn(id=k, text=v) for k, v in CATALOG.items()])


def send(store: Store, *events: EventEnvelope, project: str = "faq") -> list[int]:
    return [stored.id for stored in store_feedback(store, project, list(events))]


def show(store: Store, interaction_id: str, query: Any, items: Sequence[str], **meta: Any) -> str:
    ranking = {"items": [{"id": item, "score": 0.5} for item in items]}
    spec = InteractionCreate(id=interaction_id, input=query, output=ranking, metadata=meta)
    return store_interactions(store, "faq", [spec])[0]


def label(query: str, *items: str, group: str | None = None, **extra: Any) -> LabelEvent:
    meta: dict[str, Any] = {"group": group} if group else {}
    return LabelEvent(kind="label", input=query, items=list(items), metadata=meta, **extra)


def build(
    store: Store, settings: Settings, out: Path, config: BuildConfig = NO_MINING, **kw: Any
) -> BuiltSnapshot:
    data = read_project(store, "faq")
    return build_snapshot(data, settings, out, seed=kw.pop("seed", 13), config=config, **kw)


def rows_of(built: BuiltSnapshot) -> list[dict[str, Any]]:
    pairs = load_from_disk(str(built.path / "pairs"))
    return [{**row, "split": name} for name in pairs for row in pairs[name]]


def by_pair(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["anchor"], r["positive_id"]): r for r in rows}


def test_selections_thumbs_and_labels_become_pairs_and_negatives(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    show(store, "s1", "how do i reset my password", ["email", "delete", "pw"])
    show(store, "t1", {"query": "my card was stolen"}, ["card", "refund"])
    show(store, "t2", {"text": "get my money back"}, ["invoice", "refund"])
    show(store, "s2", "export data", ["invoice", "transfer"])
    pick, up, down, none = send(
        store,
        SelectionEvent(kind="selection", interaction_id="s1", selected=["pw"], rejected=["email"]),
        ThumbEvent(kind="thumb", interaction_id="t1", value="up"),
        ThumbEvent(kind="thumb", interaction_id="t2", value="down"),
        SelectionEvent(kind="selection", interaction_id="s2", rejected=["invoice", "transfer"]),
    )
    refund, again, unknown = send(
        store,
        label("get my money back", "refund"),
        label("get my money back", "refund"),  # the same pair twice: one row, both ids
        label("where is my parcel", "parcel"),  # an item the catalog lacks
    )

    built = build(store, settings, tmp_path / "snap")
    rows = by_pair(rows_of(built))

    assert set(rows) == {
        ("how do i reset my password", "pw"),
        ("my card was stolen", "card"),
        ("get my money back", "refund"),
    }
    password = rows["how do i reset my password", "pw"]
    # Only the explicit rejection is a negative; "delete", shown above the pick, is not.
    assert password["negative_ids"] == ["email"]
    assert password["negatives"] == [CATALOG["email"]]
    assert password["feedback_ids"] == [pick]
    assert password["positive"] == CATALOG["pw"]
    assert rows["my card was stolen", "card"]["feedback_ids"] == [up]
    money = rows["get my money back", "refund"]
    assert money["negative_ids"] == ["invoice"]  # the thumbs-down on the top result
    assert money["feedback_ids"] == sorted([down, refund, again])
    assert all(0.9 < r["score"] <= 1.0 and r["label"] == 1 for r in rows.values())
    assert built.stats["events_with_unknown_items"] == 1
    assert built.stats["negative_only_groups"] == 1  # "export data": rejections only
    assert unknown > none and built.feedback_watermark == unknown


def test_the_hardest_rejections_come_first(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    """Rejections are ordered by how often, then how high they were shown: not by id."""
    make_project(store)
    show(store, "a", "how do i reset my password", ["transfer", "email", "pw", "cancel"])
    show(store, "b", "reset password", ["cancel", "pw", "window"], group="pw")
    show(store, "c", "forgot my password", ["pw", "window"], group="pw")
    send(
        store,
        SelectionEvent(
            kind="selection",
            interaction_id="a",
            selected=["pw"],
            rejected=["cancel", "email", "transfer"],  # listed in any order
        ),
        SelectionEvent(
            kind="selection", interaction_id="b", selected=["pw"], rejected=["window", "cancel"]
        ),
        SelectionEvent(kind="selection", interaction_id="c", selected=["pw"], rejected=["window"]),
    )
    built = build(store, settings, tmp_path / "snap")
    rows = by_pair(rows_of(built))
    # "transfer" was shown first, "email" second, "cancel" fourth
    assert rows["how do i reset my password", "pw"]["negative_ids"] == [
        "transfer",
        "email",
        "cancel",
    ]
    # in the paraphrase group, "window" (rejected twice, lower) beats "cancel" (once, first)
    assert rows["reset password", "pw"]["negative_ids"] == ["window", "cancel"]


def test_untrainable_feedback_is_left_out(store: Store, settings: Settings, tmp_path: Path) -> None:
    # A thumbs-up is worth 0.05 here, under the 0.1 quality threshold.
    make_project(store, thumb_up=0.05, half_life_days=30)
    show(store, "t1", "my card was stolen", ["card"])
    old = datetime.now(UTC) - timedelta(days=400)
    send(
        store,
        ThumbEvent(kind="thumb", interaction_id="t1", value="up"),
        label("cancel my plan", "cancel", timestamp=old),  # decayed to nothing
        label("invite a colleague", "invite"),
        label("lost card", "card"),
    )

    rows = rows_of(build(store, settings, tmp_path / "snap"))

    assert sorted(r["anchor"] for r in rows) == ["invite a colleague", "lost card"]


def test_a_label_from_an_interaction_takes_its_query(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    show(store, "i1", {"query": "close my account"}, ["delete", "email"])
    (event,) = send(store, LabelEvent(kind="label", interaction_id="i1", items=["delete"]))

    (row,) = rows_of(build(store, settings, tmp_path / "snap"))

    assert (row["anchor"], row["positive_id"], row["feedback_ids"]) == (
        "close my account",
        "delete",
        [event],
    )


def test_same_feedback_same_id_and_one_more_event_changes_it(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    send(store, *(label(f"question {n} about a refund", "refund") for n in range(6)))

    first = build(store, settings, tmp_path / "a")
    second = build(store, settings, tmp_path / "b")
    (extra,) = send(store, label("where is my invoice", "invoice"))
    third = build(store, settings, tmp_path / "c")
    other_seed = build(store, settings, tmp_path / "d", seed=14)

    assert first.id == second.id and len(first.id) == 64
    assert third.id != first.id
    assert third.feedback_watermark == extra > first.feedback_watermark
    assert other_seed.id != third.id  # the seed is part of the build


def test_too_few_examples_says_how_many_are_needed(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    send(store, label("a", "pw"), label("b", "email"), label("c", "card"))

    with pytest.raises(Invalid) as caught:
        build(store, settings, tmp_path / "snap", BuildConfig(mine_negatives=False))

    assert caught.value.message == (
        "training needs at least 8 (query, item) examples; project 'faq' has 3 "
        "— send more selections or labels"
    )


def test_the_saved_folder_loads_with_datasets(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    queries = ["reset password", "forgot login", "change email", "lost card", "refund please"]
    items = ["pw", "pw", "email", "card", "refund"]
    send(
        store,
        *(label(f"{q} {n}", i) for n in range(4) for q, i in zip(queries, items, strict=True)),
    )

    built = build(store, settings, tmp_path / "snap", BuildConfig(mine_negatives=False))

    pairs = load_from_disk(str(built.path / "pairs"))
    assert sorted(pairs) == ["test", "train", "validation"]
    assert set(pairs["train"].column_names) == {
        "anchor", "positive", "positive_id", "negatives", "negative_ids",
        "query_group", "feedback_ids", "score", "label",
        "synthetic", "generator", "prompt_hash",  # lineage: test_synthetic_queries.py
    }  # fmt: skip
    assert {name: len(pairs[name]) for name in pairs} == built.splits
    assert sum(built.splits.values()) == 20 and min(built.splits.values()) > 0
    corpus = load_from_disk(str(built.path / "corpus"))
    assert dict(zip(corpus["id"], corpus["text"], strict=True)) == CATALOG
    meta = json.loads((built.path / "snapshot.json").read_text())
    assert (meta["id"], meta["project"], meta["splits"]) == (built.id, "faq", built.splits)
    assert meta["config"]["seed"] == 13


def test_mined_negatives_are_never_a_known_positive_of_the_query_group(
    store: Store, settings: Settings, tmp_path: Path, tiny_model: Path
) -> None:
    make_project(store)
    groups = {
        "walls": [("select the walls", ["wall-1"]), ("show all walls", ["wall-2"])],
        "openings": [("find the door", ["door"]), ("where is the window", ["window"])],
        "money": [("refund my payment", ["refund"]), ("cancel and refund", ["refund", "cancel"])],
    }
    send(
        store,
        *(label(q, *items, group=g) for g, pairs in groups.items() for q, items in pairs),
    )
    # Rejected for one paraphrase, right for the other: never a negative of the group.
    show(store, "s1", "show all walls", ["wall-1", "invoice"], group="walls")
    send(store, SelectionEvent(kind="selection", interaction_id="s1", rejected=["wall-1"]))
    config = BuildConfig(min_examples=1, negatives_per_query=len(CATALOG), margin=0.0)

    built = build(store, settings, tmp_path / "snap", config, model_path=str(tiny_model))

    rows = rows_of(built)
    known: dict[str, set[str]] = {}
    for row in rows:
        known.setdefault(row["query_group"], set()).add(row["positive_id"])
    assert set(known) == {"walls", "openings", "money"}
    assert all(not set(r["negative_ids"]) & known[r["query_group"]] for r in rows)
    assert built.stats["mined_negatives"] > 0 and built.stats["conflicting_negatives"] == 1
    # Mining each query with only its own positives would have returned group positives:
    # the group-wide exclusion is what keeps them out.
    alone = mine(
        str(tiny_model),
        {q: [CATALOG[i] for i in items] for pairs in groups.values() for q, items in pairs},
        list(CATALOG.values()),
        num_negatives=len(CATALOG) - 2,
        margin=0.0,
        range_min=0,
        range_max=None,
    )
    group_texts = {CATALOG[i] for g in ("walls", "openings") for i in known[g]}
    assert any(set(found) & group_texts for found in alone.values())


def test_build_and_publish_twice_reuses_the_snapshot(
    store: Store, settings: Settings, tiny_model: Path
) -> None:
    make_project(store)
    send(store, *(label(f"{word} question", "pw") for word in ("login", "password", "account")))
    config = BuildConfig(min_examples=3, negatives_per_query=2)

    first = build_and_publish(store, settings, "faq", model_path=str(tiny_model), config=config)
    second = build_and_publish(store, settings, "faq", model_path=str(tiny_model), config=config)

    assert second.id == first.id
    final = artifacts.snapshot_dir(settings, "faq", first.id)
    assert first.uri == str(final) and (final / "snapshot.json").is_file()
    assert not any((final.parent.parent / "tmp").iterdir())  # no scratch folder left behind
    with store.read() as session:
        project = get_project(session, "faq")
        assert [row.id for row in list_snapshots(session, project.id)] == [first.id]
        assert get_snapshot(session, project, first.id[:10]).id == first.id
        with pytest.raises(NotFound):
            get_snapshot(session, project, "0" * 64)
    public = snapshot_public(first)
    assert public["splits"] == {"train": 1, "validation": 1, "test": 1}
    assert public["config"]["mining_model"] == str(tiny_model)
    assert public["stats"]["mined_negatives"] > 0


def test_a_failed_build_leaves_no_folder_and_no_row(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    send(store, *(label(f"{word} question", "pw") for word in ("login", "password", "account")))

    with pytest.raises(Invalid, match="has 3"):
        build_and_publish(store, settings, "faq", model_path=None, config=BuildConfig())
    config = BuildConfig(min_examples=3)
    with pytest.raises(Invalid, match="cannot load the model") as caught:
        build_and_publish(
            store, settings, "faq", model_path=str(tmp_path / "nothing"), config=config
        )

    assert caught.value.field == "model_path"
    assert not any((artifacts.root(settings) / "faq" / "tmp").iterdir())
    assert not (artifacts.root(settings) / "faq" / "snapshots").exists()
    with store.read() as session:
        assert list_snapshots(session, get_project(session, "faq").id) == []
