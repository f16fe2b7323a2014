"""The generation dataset builder: feedback in the store → SFT, DPO and KTO splits on disk.

Each test logs chat interactions and feedback through the functions the API uses, reads the
project the way a training job does (`read_project`), builds, and reads the saved folders
back with `datasets`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from datasets import load_from_disk

from fineloop.config import Settings
from fineloop.data import ProjectData, read_project
from fineloop.errors import Invalid
from fineloop.feedback.events import (
    CorrectionEvent,
    EventEnvelope,
    LabelEvent,
    PreferenceEvent,
    RatingEvent,
    ThumbEvent,
)
from fineloop.feedback.rewards import RewardPolicy
from fineloop.operations import store_feedback, store_interactions
from fineloop.schemas import InteractionCreate, ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.tasks import available
from fineloop.tasks.base import BuiltSnapshot
from fineloop.tasks.generation.build import (
    GenerationBuildConfig,
    build_snapshot,
    count_examples,
    require_examples,
)

# The shared datasets sit beside the repository; FINELOOP_TEST_DATASETS points elsewhere.
DATASETS = Path(
    os.environ.get("FINELOOP_TEST_DATASETS")
    or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)
ANY = GenerationBuildConfig(min_examples=1)
WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SYSTEM = {"role": "system", "content": "You answer questions about geography."}


def make_project(store: Store, **policy: Any) -> None:
    # Until the generation family is installed, any family holds chat data just the same.
    task = "generation" if "generation" in available() else "embedding"
    with store.write() as session:
        create_project(
            session, ProjectCreate(name="chat", task=task, reward_policy=RewardPolicy(**policy))
        )


def ask(question: str) -> dict[str, Any]:
    return {"messages": [SYSTEM, {"role": "user", "content": question}]}


def turns(question: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": question}]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def log(store: Store, interaction_id: str, prompt: Any, output: Any) -> str:
    spec = InteractionCreate(id=interaction_id, input=prompt, output=output)
    return store_interactions(store, "chat", [spec])[0]


def send(store: Store, *events: EventEnvelope) -> list[int]:
    return [stored.id for stored in store_feedback(store, "chat", list(events))]


def thumb(interaction_id: str, value: Literal["up", "down"] = "up", **extra: Any) -> ThumbEvent:
    return ThumbEvent(kind="thumb", value=value, interaction_id=interaction_id, **extra)


def build(
    store: Store,
    settings: Settings,
    out: Path,
    config: GenerationBuildConfig = ANY,
    seed: int = 7,
) -> BuiltSnapshot:
    return build_snapshot(read_project(store, "chat"), settings, out, seed=seed, config=config)


def rows(snapshot: Path, method: str) -> list[dict[str, Any]]:
    """Every row of one method, each with the split it landed in."""
    splits = load_from_disk(str(snapshot / method))
    return [{**row, "split": name} for name in splits for row in splits[name]]


def meta(snapshot: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((snapshot / "snapshot.json").read_text())
    return loaded


# --- the mapping, one feedback kind at a time ---------------------------------------------


def test_a_correction_teaches_the_fix_and_prefers_it_over_what_was_shown(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    log(store, "i1", ask("Capital of France?"), {"text": "Lyon."})
    log(store, "i2", ask("Capital of Italy?"), {"text": "Rome."})
    fixed, same = send(
        store,
        CorrectionEvent(kind="correction", interaction_id="i1", output="Paris."),
        # the user "corrected" it to what was shown: a fix to learn, nothing to prefer
        CorrectionEvent(kind="correction", interaction_id="i2", output={"text": "Rome."}),
    )
    (no_shown,) = send(
        store,
        CorrectionEvent(kind="correction", input={"prompt": "Capital of Spain?"}, output="Madrid"),
    )
    built = build(store, settings, tmp_path / "snap")
    sft = {r["completion"][0]["content"]: r for r in rows(built.path, "sft")}
    assert set(sft) == {"Paris.", "Rome.", "Madrid"}
    assert sft["Paris."]["prompt"] == turns("Capital of France?")
    assert sft["Paris."]["feedback_ids"] == [fixed]
    assert sft["Rome."]["feedback_ids"] == [same]
    # A plain prompt becomes one user turn.
    assert sft["Madrid"]["prompt"] == [{"role": "user", "content": "Capital of Spain?"}]
    assert sft["Madrid"]["feedback_ids"] == [no_shown]
    dpo = rows(built.path, "dpo")
    assert [(r["prompt"], r["chosen"], r["rejected"], r["feedback_ids"]) for r in dpo] == [
        (turns("Capital of France?"), answer("Paris."), answer("Lyon."), [fixed])
    ]
    assert rows(built.path, "kto") == []  # a correction is not a thumb
    assert built.stats["dropped"] == {"identical_sides": 1}


def test_preferences_inline_or_by_interaction_id(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    log(store, "a", ask("Largest ocean?"), {"text": "The Pacific."})
    log(store, "b", ask("Largest ocean?"), {"text": "The Atlantic."})
    by_id, inline = send(
        store,
        # no input and no interaction of its own: the prompt is the chosen interaction's
        PreferenceEvent(kind="preference", chosen_interaction_id="a", rejected_interaction_id="b"),
        PreferenceEvent(
            kind="preference",
            input={"prompt": "Longest river?"},
            chosen={"text": "The Nile."},
            rejected="The Thames.",
        ),
    )
    data = read_project(store, "chat")
    # The reader loads interactions a preference names only by id.
    assert {"a", "b"} <= set(data.interactions)
    built = build_snapshot(data, settings, tmp_path / "snap", seed=7, config=ANY)
    dpo = {r["chosen"][0]["content"]: r for r in rows(built.path, "dpo")}
    assert set(dpo) == {"The Pacific.", "The Nile."}
    assert dpo["The Pacific."]["prompt"] == turns("Largest ocean?")
    assert dpo["The Pacific."]["rejected"] == answer("The Atlantic.")
    assert dpo["The Pacific."]["feedback_ids"] == [by_id]
    assert dpo["The Nile."]["prompt"] == [{"role": "user", "content": "Longest river?"}]
    assert dpo["The Nile."]["rejected"] == answer("The Thames.")
    assert dpo["The Nile."]["feedback_ids"] == [inline]
    # A preference says which of two is better, not that either is good: no SFT, no KTO.
    assert rows(built.path, "sft") == [] and rows(built.path, "kto") == []
    assert meta(built.path)["methods"] == ["dpo"]


def test_thumbs_and_ratings_judge_outputs_and_good_ones_teach_by_example(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)  # ratings 1..5 map onto -1..1; quality threshold 0.1
    outputs = {"up": "Tokyo.", "down": "Osaka.", "five": "Canberra.", "two": "Sydney."}
    for name, text in outputs.items():
        log(store, name, ask(f"Question {name}?"), {"text": text, "tokens": 3})
    log(store, "three", ask("Question three?"), {"text": "Maybe."})
    up, down, five, two, three = send(
        store,
        thumb("up", timestamp=WHEN),
        thumb("down", "down", timestamp=WHEN),
        RatingEvent(kind="rating", interaction_id="five", value=5, timestamp=WHEN),
        RatingEvent(kind="rating", interaction_id="two", value=2, timestamp=WHEN),
        RatingEvent(kind="rating", interaction_id="three", value=3, timestamp=WHEN),  # neutral
    )
    built = build(store, settings, tmp_path / "snap")
    kto = {
        r["completion"][0]["content"]: (r["label"], r["feedback_ids"])
        for r in rows(built.path, "kto")
    }
    assert kto == {
        "Tokyo.": (True, [up]),
        "Osaka.": (False, [down]),
        "Canberra.": (True, [five]),
        "Sydney.": (False, [two]),
    }
    sft = {r["completion"][0]["content"]: r["feedback_ids"] for r in rows(built.path, "sft")}
    assert sft == {"Tokyo.": [up], "Canberra.": [five]}
    # A rating of 3 is worth 0: below the quality threshold, it teaches nothing.
    assert built.stats["dropped"] == {"below_quality_threshold": 1}
    assert three not in {i for r in rows(built.path, "kto") for i in r["feedback_ids"]}


def test_judgments_of_one_output_merge_and_a_tie_is_dropped(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    log(store, "liked", ask("Highest mountain?"), {"text": "Everest."})
    log(store, "split", ask("Best city?"), {"text": "Vienna."})
    ids = send(
        store,
        thumb("liked", timestamp=WHEN, user_id="u1"),
        thumb("liked", timestamp=WHEN, user_id="u2"),
        thumb("liked", "down", timestamp=WHEN, user_id="u3"),
        thumb("split", timestamp=WHEN),
        thumb("split", "down", timestamp=WHEN),  # +1 and -1: no verdict
    )
    built = build(store, settings, tmp_path / "snap")
    kto = rows(built.path, "kto")
    assert [(r["completion"], r["label"], r["feedback_ids"]) for r in kto] == [
        (answer("Everest."), True, ids[:3])  # mean 1/3: desirable, and above the threshold
    ]
    assert [(r["completion"], r["feedback_ids"]) for r in rows(built.path, "sft")] == [
        (answer("Everest."), ids[:3])
    ]
    assert built.stats["dropped"] == {"conflicting_judgments": 1}
    assert built.stats["merged"] == {"kto": 2}


def test_duplicates_merge_their_lineage(store: Store, settings: Settings, tmp_path: Path) -> None:
    make_project(store)
    log(store, "i1", ask("Capital of Peru?"), {"text": "Quito."})
    log(store, "i2", ask("Capital of Peru?"), {"text": "Quito."})  # same call, logged twice
    first, second, liked = send(
        store,
        CorrectionEvent(kind="correction", interaction_id="i1", output="Lima."),
        CorrectionEvent(kind="correction", interaction_id="i2", output=" Lima. "),
        # the same text a user liked elsewhere: one SFT row, three events behind it
        CorrectionEvent(kind="correction", input=ask("Capital of Peru?"), output="Lima."),
    )
    built = build(store, settings, tmp_path / "snap")
    sft = rows(built.path, "sft")
    assert [(r["completion"], r["feedback_ids"]) for r in sft] == [
        (answer("Lima."), [first, second, liked])
    ]
    dpo = rows(built.path, "dpo")
    assert [(r["chosen"], r["rejected"], r["feedback_ids"]) for r in dpo] == [
        (answer("Lima."), answer("Quito."), [first, second])
    ]
    assert built.stats["merged"] == {"dpo": 1, "sft": 2}
    assert built.stats["examples"] == 2


def test_every_drop_is_counted_with_its_reason(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    log(store, "blank", ask("Say something"), {"text": "   "})
    log(store, "ranking", ask("Pick one"), {"items": [{"id": "x", "score": 1.0}]})
    log(store, "no-question", {"image": "cat.png"}, {"text": "A cat."})
    log(store, "ends-with-reply", {"messages": answer("Hello!")}, {"text": "Hi."})
    log(store, "long-prompt", ask("Why? " * 40), {"text": "Because."})
    log(store, "long-reply", ask("Tell me a story"), {"text": "Once upon a time. " * 20})
    log(store, "good", ask("Capital of Chile?"), {"text": "Santiago."})
    log(store, "old", ask("Capital of Peru?"), {"text": "Lima."})
    send(
        store,
        thumb("blank"),
        thumb("ranking"),
        thumb("no-question"),
        thumb("ends-with-reply"),
        thumb("long-prompt"),
        thumb("long-reply"),
        thumb("good"),
        # two years old with a 90-day half-life: worth 0.002, under the threshold of 0.1
        thumb("old", timestamp=datetime.now(UTC) - timedelta(days=730)),
        ThumbEvent(kind="thumb", value="up", input=ask("Nothing shown?")),
        # the same reply but for surrounding space: taken at the edge, the same once stripped
        PreferenceEvent(
            kind="preference", input={"prompt": "Pick"}, chosen="Same", rejected="Same "
        ),
        LabelEvent(kind="label", input="a question", label="geography"),
    )
    config = GenerationBuildConfig(min_examples=1, max_prompt_chars=120, max_completion_chars=200)
    built = build(store, settings, tmp_path / "snap", config)
    assert built.stats["dropped"] == {
        "below_quality_threshold": 1,
        "completion_too_long": 1,
        "empty_text": 1,
        "identical_sides": 1,
        "kind_not_used": 1,
        "no_output": 2,  # a ranking is no text; a thumb on an input alone judged nothing
        "no_prompt": 2,  # an input with no question; a conversation that ends in a reply
        "prompt_too_long": 1,
    }
    assert [r["completion"] for r in rows(built.path, "kto")] == [answer("Santiago.")]
    assert meta(built.path)["stats"]["dropped"] == built.stats["dropped"]


# --- splits, ids, counts ---------------------------------------------------------------------


def _seed_tasks(count: int) -> list[tuple[str, str]]:
    """(question, answer) pairs written by people: the Self-Instruct seed tasks."""
    path = DATASETS / "self-instruct" / "seed_tasks.jsonl"
    assert path.exists(), f"the Self-Instruct sample is missing: {path} (../shared/datasets)"
    pairs = []
    for line in path.read_text().splitlines()[:count]:
        task = json.loads(line)
        instance = task["instances"][0]
        question = "\n\n".join(p for p in (task["instruction"], instance["input"]) if p)
        pairs.append((question, instance["output"]))
    return pairs


def _realistic_project(store: Store, count: int = 24) -> None:
    """Each seed task gets all three kinds of feedback; every third prompt comes back a
    second time, shouted (different case and punctuation: the same split group)."""
    make_project(store)
    events: list[EventEnvelope] = []
    for n, (question, reply) in enumerate(_seed_tasks(count)):
        log(store, f"t{n}", ask(question), {"text": reply})
        log(store, f"w{n}", ask(question), {"text": "I don't know."})
        events += [
            thumb(f"t{n}"),
            thumb(f"w{n}", "down"),
            PreferenceEvent(
                kind="preference", chosen_interaction_id=f"t{n}", rejected_interaction_id=f"w{n}"
            ),
        ]
        if n % 3 == 0:
            log(store, f"s{n}", ask(question.upper() + "!!"), {"text": "Not sure."})
            events.append(CorrectionEvent(kind="correction", interaction_id=f"s{n}", output=reply))
    send(store, *events)


def test_no_prompt_lands_in_two_splits(store: Store, settings: Settings, tmp_path: Path) -> None:
    _realistic_project(store)
    built = build(store, settings, tmp_path / "snap")
    where: dict[str, set[str]] = defaultdict(set)
    texts: dict[str, set[str]] = defaultdict(set)
    for method in ("sft", "dpo", "kto"):
        for row in rows(built.path, method):
            where[row["prompt_key"]].add(row["split"])
            texts[row["prompt_key"]].add(row["prompt"][-1]["content"])
    assert len(where) == 24
    assert all(len(splits) == 1 for splits in where.values()), where
    assert {split for splits in where.values() for split in splits} == {
        "train",
        "validation",
        "test",
    }
    # The shouted copies share their original's key: 8 keys hold two spellings.
    assert sum(len(t) == 2 for t in texts.values()) == 8
    # Every method has rows in train, and snapshot.json counts what is on disk.
    saved = meta(built.path)
    assert saved["methods"] == ["sft", "dpo", "kto"]
    for method in ("sft", "dpo", "kto"):
        on_disk = load_from_disk(str(built.path / method))
        assert saved["counts"][method] == {name: len(on_disk[name]) for name in on_disk}
    assert sum(saved["counts"]["kto"].values()) == 48  # a good and a bad answer per task
    assert sum(saved["counts"]["dpo"].values()) == 24 + 8  # preferences + corrections
    assert built.splits == {
        name: sum(saved["counts"][m][name] for m in ("sft", "dpo", "kto"))
        for name in ("train", "validation", "test")
    }


def test_the_id_is_the_content(store: Store, settings: Settings, tmp_path: Path) -> None:
    _realistic_project(store, count=6)
    data = read_project(store, "chat")
    first = build_snapshot(data, settings, tmp_path / "a", seed=7, config=ANY)
    again = build_snapshot(data, settings, tmp_path / "b", seed=7, config=ANY)
    assert first.id == again.id == meta(tmp_path / "b")["id"]
    assert rows(first.path, "dpo") == rows(again.path, "dpo")
    other_seed = build_snapshot(data, settings, tmp_path / "c", seed=8, config=ANY)
    assert other_seed.id != first.id
    send(store, thumb("t0", user_id="someone else"))
    grown = build(store, settings, tmp_path / "d")
    assert grown.id != first.id
    assert grown.feedback_watermark == first.feedback_watermark + 1


def test_snapshot_json_and_empty_methods(store: Store, settings: Settings, tmp_path: Path) -> None:
    make_project(store)
    send(
        store,
        *[
            PreferenceEvent(
                kind="preference", input=ask("Capital of Chile?"), chosen=good, rejected="Lima."
            )
            for good in ("Santiago.", "Santiago de Chile.", "It is Santiago.")
        ],
    )
    config = GenerationBuildConfig(min_examples=3, primary_metric="reward_accuracy")
    built = build(store, settings, tmp_path / "snap", config)
    saved = meta(built.path)
    assert saved["task"] == "generation"
    assert saved["primary_metric"] == "reward_accuracy"
    assert saved["methods"] == ["dpo"]  # one prompt group: it is all train
    assert saved["counts"]["dpo"] == {"train": 3, "validation": 0, "test": 0}
    assert saved["config"]["seed"] == 7 and saved["config"]["min_examples"] == 3
    # The methods without data are still there, empty, with their columns.
    for method, columns in (
        ("sft", ["prompt", "completion", "prompt_key", "feedback_ids"]),
        ("kto", ["prompt", "completion", "label", "prompt_key", "feedback_ids"]),
    ):
        splits = load_from_disk(str(built.path / method))
        assert set(splits) == {"train", "validation", "test"}
        assert all(len(splits[name]) == 0 for name in splits)
        assert splits["train"].column_names == columns


def test_too_little_data_says_how_much_is_needed(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    make_project(store)
    log(store, "i1", ask("Capital of Chile?"), {"text": "Santiago."})
    send(store, thumb("i1"))
    data = read_project(store, "chat")
    config = GenerationBuildConfig()  # min_examples 4
    assert count_examples(data, config) == 2  # one KTO row and its SFT twin
    with pytest.raises(Invalid, match=r"at least 4 examples.*'chat' has 2") as caught:
        build_snapshot(data, settings, tmp_path / "snap", seed=7, config=config)
    assert caught.value.field == "feedback"
    assert not (tmp_path / "snap" / "snapshot.json").exists()
    require_examples(2, GenerationBuildConfig(min_examples=2), "chat")  # enough: no error


def test_an_empty_project_is_refused(settings: Settings, tmp_path: Path, store: Store) -> None:
    make_project(store)
    data: ProjectData = read_project(store, "chat")
    assert count_examples(data, ANY) == 0
    with pytest.raises(Invalid, match="has 0"):
        build_snapshot(data, settings, tmp_path / "snap", seed=7, config=ANY)


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="leave room for train"):
        GenerationBuildConfig(validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="Extra inputs"):
        GenerationBuildConfig.model_validate({"min_exemples": 3})
