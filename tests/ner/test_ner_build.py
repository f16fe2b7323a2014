"""The NER builder: labels and corrections → one row per text, split by document.

Each test builds `ProjectData` by hand (the records a training job reads), builds the
snapshot and reads its folders back with `datasets`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from pydantic import TypeAdapter

from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.data.records import FeedbackRecord, ProjectData, ProjectInfo, ShownInteraction
from fineloop.errors import Invalid
from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.feedback.rewards import RewardPolicy
from fineloop.operations import store_feedback, store_interactions
from fineloop.schemas import InteractionCreate, ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.tasks.ner.build import build_snapshot, require_examples

EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TYPES = ["EQUIPMENT", "MEASURE"]


def span(start: int, end: int, label: str) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label}


class Project:
    """Feedback records in id order, as `read_project` gives them."""

    def __init__(self) -> None:
        self.records: list[FeedbackRecord] = []
        self.shown: dict[str, ShownInteraction] = {}

    def interaction(self, id: str, text: str, spans: list[dict[str, Any]]) -> str:
        self.shown[id] = ShownInteraction(
            id, {"text": text}, {"spans": spans}, "v1", None, None, {}, T0
        )
        return id

    def add(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        input: Any = None,
        interaction: str | None = None,
        trainable: bool = True,
    ) -> int:
        id = len(self.records) + 1
        record = FeedbackRecord(
            id=id,
            kind=kind,
            payload=payload,
            input=input,
            user_id=None,
            timestamp=T0 + timedelta(minutes=id),
            reward=1.0,
            effective_reward=1.0,
            trainable=trainable,
            metadata={},
            interaction_id=interaction,
            interaction=self.shown.get(interaction) if interaction else None,
        )
        self.records.append(record)
        return id

    def label(self, text: str, *spans: dict[str, Any], document: str | None = None) -> int:
        value = {"text": text} | ({"document": document} if document else {})
        return self.add("label", {"spans": list(spans)}, input=value)

    def data(self, types: list[str] = TYPES) -> ProjectData:
        info = ProjectInfo(
            "plant", "ner", None, RewardPolicy(), {}, {"entity_types": types, "labelling": "all"}
        )
        watermark = len(self.records)
        as_of = T0 + timedelta(minutes=watermark)
        return ProjectData(info, tuple(self.records), (), watermark, as_of, self.shown)


def build(project: Project, folder: Path, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    data = kwargs.pop("data", None) or project.data()
    built = build_snapshot(data, Settings(), folder, seed=kwargs.pop("seed", 0), **kwargs)
    splits = load_from_disk(str(folder / "examples"))
    rows = {name: splits[name].to_list() for name in ("train", "validation", "test")}
    assert built.splits == {name: len(r) for name, r in rows.items()}
    return built, rows


def by_text(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {row["text"]: row | {"split": name} for name, split in rows.items() for row in split}


def test_a_document_never_straddles_two_splits(tmp_path: Path) -> None:
    project = Project()
    for doc in range(8):
        for line in range(3):
            project.label(f"pump {doc}{line} at 4 bar", span(0, 7, "EQUIPMENT"), document=f"d{doc}")
    for single in range(4):  # no document: each text is its own
        project.label(f"valve {single} shut")
    built, rows = build(project, tmp_path / "snap", validation_fraction=0.2, test_fraction=0.3)
    splits_of: dict[str, set[str]] = {}
    for name, split in rows.items():
        for row in split:
            splits_of.setdefault(row["document"], set()).add(name)
    assert all(len(names) == 1 for names in splits_of.values())
    assert len(splits_of) == 12 and all(rows.values())  # 8 documents + 4 lone texts
    assert sum(built.stats["documents"].values()) == 12
    assert built.stats["texts"] == built.splits


def test_a_small_project_still_gets_a_train_split(tmp_path: Path) -> None:
    project = Project()
    for n in range(4):
        project.label(f"pump {n} runs", span(0, 6, "EQUIPMENT"))
    built, rows = build(project, tmp_path / "snap")
    assert rows["train"] and sum(built.splits.values()) == 4


def test_the_newest_event_of_a_text_wins_and_every_one_is_in_its_lineage(
    tmp_path: Path,
) -> None:
    project = Project()
    text = "pump 3 runs at 40 bar today"
    first = project.label(text, span(0, 4, "EQUIPMENT"))
    project.interaction("i1", text, [span(0, 4, "EQUIPMENT"), span(15, 21, "MEASURE")])
    edits = [
        {"op": "move", "start": 0, "end": 4, "new_start": 0, "new_end": 6},
        {"op": "relabel", "start": 15, "end": 21, "label": "EQUIPMENT"},
        {"op": "add", "start": 22, "end": 27, "label": "MEASURE"},
        {"op": "delete", "start": 22, "end": 27},
        {"op": "add", "start": 12, "end": 14, "label": "MEASURE"},
    ]
    fixed = project.add("correction", {"output": {"edits": edits}}, interaction="i1")
    project.add("thumb", {"value": "down"}, interaction="i1")
    for n in range(3):
        project.label(f"valve {n} shut", span(0, 7, "EQUIPMENT"))
    _, rows = build(project, tmp_path / "snap")
    row = by_text(rows)[text]
    assert row["spans"] == [
        span(0, 6, "EQUIPMENT"),
        span(12, 14, "MEASURE"),
        span(15, 21, "EQUIPMENT"),
    ]
    assert row["feedback_ids"] == [first, fixed]


def test_a_later_label_replaces_a_correction(tmp_path: Path) -> None:
    project = Project()
    text = "pump 3 runs"
    project.interaction("i1", text, [span(0, 4, "EQUIPMENT")])
    project.add("correction", {"output": {"spans": [span(0, 6, "MEASURE")]}}, interaction="i1")
    project.label(text, span(0, 6, "EQUIPMENT"))
    for n in range(3):
        project.label(f"valve {n} shut", span(0, 7, "EQUIPMENT"))
    built, rows = build(project, tmp_path / "snap")
    assert by_text(rows)[text]["spans"] == [span(0, 6, "EQUIPMENT")]
    assert built.stats["superseded"] == 1
    assert built.stats["records_used"] == {"label": 4}


def test_spans_that_no_longer_fit_are_dropped_and_counted(tmp_path: Path) -> None:
    project = Project()
    for n in range(4):
        project.label(f"pump {n} at 4 bar", span(0, 6, "EQUIPMENT"), span(10, 15, "MEASURE"))
    project.label("valve shut", span(0, 5, "EQUIPMENT"))
    project.label("no entity here")  # an empty span set is a row
    project.interaction("i1", "gauge reads 3", [span(0, 5, "EQUIPMENT")])
    project.add(
        "correction",
        {"output": {"edits": [{"op": "delete", "start": 0, "end": 3}]}},
        interaction="i1",
    )
    project.add(
        "label", {"spans": [span(0, 5, "EQUIPMENT")]}, input={"text": "cold pump"}, trainable=False
    )
    project.add("thumb", {"value": "up"}, interaction="i1")
    # The project no longer finds MEASURE: the four texts that have one are left out.
    data = project.data(["EQUIPMENT"])
    built, rows = build(project, tmp_path / "snap", data=data, min_texts=2)
    assert sorted(by_text(rows)) == ["no entity here", "valve shut"]
    assert built.stats["dropped"] == {
        "below_quality_threshold": 1,
        "edit_of_unshown_span": 1,
        "kind_not_used": 1,
        "undeclared_type": 4,
    }


def test_snapshot_json_holds_the_types_labelling_and_span_counts(tmp_path: Path) -> None:
    project = Project()
    for n in range(5):
        project.label(f"pump {n} at 4 bar", span(0, 6, "EQUIPMENT"), span(10, 15, "MEASURE"))
    project.label("nothing to see")
    built, _ = build(project, tmp_path / "snap")
    meta = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    assert meta["id"] == built.id and meta["task"] == "ner"
    assert meta["config"]["entity_types"] == TYPES and meta["config"]["labelling"] == "all"
    per_type = meta["stats"]["spans_per_type"]
    assert sum(counts["MEASURE"] for counts in per_type.values()) == 5
    assert sum(meta["stats"]["texts_without_entities"].values()) == 1
    again, _ = build(project, tmp_path / "again")
    other_seed, _ = build(project, tmp_path / "seed", seed=1)
    assert again.id == built.id != other_seed.id


def test_require_examples_says_how_many_and_what_counts() -> None:
    project = Project()
    project.label("pump 1 runs", span(0, 6, "EQUIPMENT"))
    project.label("pump 2 runs", span(0, 6, "PERSON"))
    with pytest.raises(Invalid) as error:
        require_examples(project.data())
    message = error.value.message
    assert "at least 4 texts" in message and "has 1" in message
    assert "1 undeclared_type" in message and "label event" in message
    for n in range(3):
        project.label(f"pump {n + 3} runs", span(0, 6, "EQUIPMENT"))
    require_examples(project.data())


def test_texts_without_any_entity_are_not_enough() -> None:
    project = Project()
    for n in range(4):
        project.label(f"nothing {n}")
    with pytest.raises(Invalid, match=r"none of .* 4 labelled texts has an entity"):
        require_examples(project.data())


def test_bad_build_options_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as error:
        build_snapshot(Project().data(), Settings(), tmp_path, seed=0, test_fraction=1.5)
    assert error.value.field == "test_fraction"


def test_feedback_stored_through_ingest_builds_the_same_rows(store: Store, tmp_path: Path) -> None:
    with store.write() as session:
        options = {"entity_types": TYPES}
        create_project(session, ProjectCreate(name="plant", task="ner", task_options=options))
    text = "pump 3 runs at 40 bar"
    shown = {"spans": [span(0, 4, "EQUIPMENT"), span(15, 21, "MEASURE")]}
    store_interactions(
        store, "plant", [InteractionCreate(id="i1", input={"text": text}, output=shown)]
    )
    move = {"op": "move", "start": 0, "end": 4, "new_start": 0, "new_end": 6}
    raw = [{"kind": "correction", "interaction_id": "i1", "output": {"edits": [move]}}]
    raw += [
        {"kind": "label", "input": {"text": f"valve {n} shut"}, "spans": [span(0, 7, "EQUIPMENT")]}
        for n in range(3)
    ]
    raw += [{"kind": "label", "input": "nothing here", "spans": []}]
    stored = store_feedback(store, "plant", [EVENT.validate_python(r) for r in raw])
    built, rows = build(Project(), tmp_path / "snap", data=read_project(store, "plant"))
    row = by_text(rows)[text]
    assert row["spans"] == [span(0, 6, "EQUIPMENT"), span(15, 21, "MEASURE")]
    assert row["feedback_ids"] == [stored[0].id]
    assert by_text(rows)["nothing here"]["spans"] == []
    assert sum(built.splits.values()) == 5 and built.feedback_watermark == stored[-1].id
