"""Splitting by query group: paraphrases stay together, splits are fixed by the seed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from datasets import load_from_disk

from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.data.splits import QueryGroups, assign_splits, normalize_query
from fineloop.feedback.events import LabelEvent
from fineloop.operations import store_feedback, store_items
from fineloop.schemas import ItemIn, ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.tasks.embedding.build import BuildConfig, build_snapshot

TOPICS = ["password", "email", "card", "refund", "invoice", "plan", "team", "data", "door", "wall"]
WORDINGS = ["how do i fix my {}", "{} problem", "help with the {} please"]


def test_normalized_queries_are_one_group() -> None:
    groups = QueryGroups()
    groups.add("Reset  my Password?", None)
    groups.add("reset my password", None)
    groups.add("lost card", "cards")
    groups.add("LOST CARD!", None)  # joins "cards" through its normalized text
    groups.add("my card is gone", "cards")

    assert normalize_query("  Où est   ma CARTE ?! ") == "où est ma carte"
    assert groups.key("Reset  my Password?") == groups.key("reset my password")
    assert groups.key("LOST CARD!") == groups.key("my card is gone") == "cards"
    assert groups.key("reset my password") != "cards"


def test_tiny_datasets_still_get_every_split_they_can() -> None:
    def sizes(n: int) -> dict[str, int]:
        split = assign_splits(
            [f"g{i}" for i in range(n)], seed=0, validation_fraction=0.1, test_fraction=0.2
        )
        return {name: list(split.values()).count(name) for name in ("train", "validation", "test")}

    assert sizes(1) == {"train": 1, "validation": 0, "test": 0}
    assert sizes(2) == {"train": 1, "validation": 0, "test": 1}
    assert sizes(3) == {"train": 1, "validation": 1, "test": 1}
    assert all(min(sizes(n).values()) >= 1 for n in range(3, 30))


def test_a_group_keeps_its_split_as_groups_are_added() -> None:
    # Held-out queries stay held out in later snapshots, so a champion trained on an older
    # snapshot is never tested on queries it trained on.
    def split(n: int) -> dict[str, str]:
        return assign_splits(
            [f"g{i}" for i in range(n)], seed=5, validation_fraction=0.1, test_fraction=0.2
        )

    small, large = split(200), split(400)

    assert all(large[key] == where for key, where in small.items())
    assert 0.1 < list(large.values()).count("test") / 400 < 0.3


def _build(store: Store, settings: Settings, out: Path, seed: int) -> dict[str, str]:
    """query_group → split, checking on the way that no group spans two splits."""
    config = BuildConfig(mine_negatives=False)
    built = build_snapshot(read_project(store, "faq"), settings, out, seed=seed, config=config)
    pairs = load_from_disk(str(out / "pairs"))
    seen: dict[str, set[str]] = defaultdict(set)
    for name in pairs:
        for group in pairs[name]["query_group"]:
            seen[group].add(name)
    assert all(len(splits) == 1 for splits in seen.values()), seen
    assert sum(built.splits.values()) == len(TOPICS) * len(WORDINGS)
    return {group: next(iter(splits)) for group, splits in seen.items()}


def test_paraphrase_groups_never_span_splits_and_seeds_fix_the_split(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    with store.write() as session:
        create_project(session, ProjectCreate(name="faq", task="embedding"))
    store_items(store, "faq", [ItemIn(id=t, text=f"all about the {t}") for t in TOPICS])
    events = [
        LabelEvent(kind="label", input=w.format(t), items=[t], metadata={"group": t})
        for t in TOPICS
        for w in WORDINGS
    ]
    store_feedback(store, "faq", events)

    first = _build(store, settings, tmp_path / "a", seed=1)
    again = _build(store, settings, tmp_path / "b", seed=1)
    other = _build(store, settings, tmp_path / "c", seed=2)

    assert set(first) == set(TOPICS)  # three paraphrases each, one group each
    assert first == again
    assert other != first
    assert set(first.values()) == {"train", "validation", "test"}
