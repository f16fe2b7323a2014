"""Online adaptation between retrains: a span users added or corrected is found at once in
later texts (source "memory"), on token boundaries; a span users removed stops being
returned for that surface form; newest feedback wins; off with the serving policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks.ner.adapt import MEMORY_SCORE, Entry, View, form_of, matches, merge
from fineloop.tasks.ner.adapt_memory import SpanMemory
from ner.serving_helpers import (
    build_ner_model,
    create_project,
    extract,
    send_feedback,
    spans_by_text,
)

PROJECT = "maintenance"
FIRST = "Replaced the seal on the Flowserve pump."


@pytest.fixture(scope="module")
def ner_model(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ner_model(_tiny_model_master, tmp_path_factory.mktemp("ner-model"))


def _one(client: TestClient, text: str) -> dict[str, Any]:
    result: dict[str, Any] = extract(client, PROJECT, text=text)["results"][0]
    return result


def _at(result: dict[str, Any], surface: str) -> dict[str, Any]:
    """The shown span with this text (offsets for an edit)."""
    return spans_by_text(result)[surface]


def _correct(client: TestClient, result: dict[str, Any], *edits: dict[str, Any]) -> int:
    event = {"kind": "correction", "interaction_id": result["interaction_id"]}
    return send_feedback(client, PROJECT, event | {"output": {"edits": list(edits)}})


def _delete(span: dict[str, Any]) -> dict[str, Any]:
    return {"op": "delete", "start": span["start"], "end": span["end"]}


def _join_flowserve_pump(client: TestClient, first: dict[str, Any]) -> int:
    flowserve, pump = _at(first, "Flowserve"), _at(first, "pump")
    joined = {"op": "add", "start": flowserve["start"], "end": pump["end"], "label": "EQUIPMENT"}
    return _correct(client, first, _delete(flowserve), _delete(pump), joined)


def test_a_corrected_span_is_found_at_once_in_later_texts(
    client: TestClient, ner_model: Path
) -> None:
    create_project(client, PROJECT, ner_model)
    first = _one(client, FIRST)
    assert "Flowserve pump" not in spans_by_text(first)  # the model splits it
    feedback_id = _join_flowserve_pump(client, first)

    later = _one(client, "Check the flowserve  PUMP's seal today.")
    found = spans_by_text(later)
    memory = found["flowserve  PUMP"]
    assert memory["label"] == "EQUIPMENT" and memory["source"] == "memory"
    assert memory["score"] == MEMORY_SCORE and memory["feedback_id"] == feedback_id
    assert "flowserve" not in found and "PUMP" not in found  # the memory span won them
    assert found["seal"]["source"] == "model" and found["today"]["source"] == "model"
    logged = client.get(f"/v1/projects/{PROJECT}/interactions/{later['interaction_id']}")
    assert memory in logged.json()["output"]["spans"]


def test_the_very_next_request_waits_for_the_refresh_a_correction_started(
    client: TestClient, ner_model: Path
) -> None:
    create_project(client, PROJECT, ner_model)
    first = _one(client, FIRST)
    seal = _at(first, "seal")
    edit = {"op": "relabel", "start": seal["start"], "end": seal["end"], "label": "MEASURE"}
    event = {
        "kind": "correction",
        "interaction_id": first["interaction_id"],
        "output": {"edits": [edit]},
    }
    sent = client.post(f"/v1/projects/{PROJECT}/feedback", json=event)
    assert sent.is_success, sent.text  # no settle: the next request waits for the refresh
    found = spans_by_text(_one(client, "A new seal."))
    assert (found["seal"]["label"], found["seal"]["source"]) == ("MEASURE", "memory")


def test_matches_respect_token_boundaries(client: TestClient, ner_model: Path) -> None:
    create_project(client, PROJECT, ner_model)
    first = _one(client, FIRST)
    pump = _at(first, "pump")
    _correct(
        client,
        first,
        {"op": "relabel", "start": pump["start"], "end": pump["end"], "label": "MEASURE"},
    )

    later = _one(client, "A pumpkin, two pumps and one pump.")
    found = spans_by_text(later)
    assert found["pump"]["source"] == "memory" and found["pump"]["label"] == "MEASURE"
    assert found["pump"]["start"] == later["spans"][-2]["start"]  # the last word, not a part
    assert found["pumpkin"]["source"] == "model" and found["pumps"]["source"] == "model"


def test_a_removed_span_stops_being_returned_for_its_form(
    client: TestClient, ner_model: Path
) -> None:
    create_project(client, PROJECT, ner_model)
    first = _one(client, FIRST)
    _correct(client, first, _delete(_at(first, "seal")))

    later = _one(client, "The SEAL broke near the valve.")
    found = spans_by_text(later)
    assert "SEAL" not in found  # the model still tags it; the suppression drops it
    assert {"broke", "valve"} <= set(found)

    # a memory span removed in turn is no longer returned either
    _join_flowserve_pump(client, _one(client, FIRST))
    shown = _one(client, "Flowserve pump tripped.")
    assert _at(shown, "Flowserve pump")["source"] == "memory"
    _correct(client, shown, _delete(_at(shown, "Flowserve pump")))
    assert "Flowserve pump" not in spans_by_text(_one(client, "Flowserve pump again."))


def test_labels_teach_and_suppress_and_the_newest_feedback_wins(
    client: TestClient, ner_model: Path
) -> None:
    create_project(client, PROJECT, ner_model)
    shown = _one(client, "Torque wrench at 40 Nm.")
    # a full set for the interaction: every shown span it leaves out is removed
    send_feedback(
        client,
        PROJECT,
        {
            "kind": "label",
            "interaction_id": shown["interaction_id"],
            "spans": [{"start": 17, "end": 22, "label": "MEASURE"}],
        },
    )
    found = spans_by_text(_one(client, "The torque wrench needs 40 Nm or more."))
    assert found["40 Nm"]["source"] == "memory" and found["40 Nm"]["label"] == "MEASURE"
    assert not {"torque", "wrench", "at"} & set(found)
    assert {"needs", "more"} <= set(found)

    # a label without an interaction: its text is the event's input; newer beats older
    text = "Swap 40 Nm."
    span = {"start": 5, "end": 10, "label": "EQUIPMENT"}
    send_feedback(client, PROJECT, {"kind": "label", "input": {"text": text}, "spans": [span]})
    assert spans_by_text(_one(client, "Set 40 nm."))["40 nm"]["label"] == "EQUIPMENT"


def test_policy_off_serves_the_model_alone(client: TestClient, ner_model: Path) -> None:
    create_project(client, PROJECT, ner_model, online_adaptation=False)
    first = _one(client, FIRST)
    _join_flowserve_pump(client, first)
    _correct(client, _one(client, FIRST), _delete(_at(first, "seal")))

    later = _one(client, "The Flowserve pump seal.")
    assert {s["source"] for s in later["spans"]} == {"model"}
    assert {"Flowserve", "pump", "seal"} <= set(spans_by_text(later))


def test_the_memory_keeps_the_newest_forms_within_its_bound(
    client: TestClient, store: Store, ner_model: Path
) -> None:
    create_project(client, PROJECT, ner_model)
    for word in ("alpha", "beta", "gamma"):
        span = {"start": 0, "end": len(word), "label": "EQUIPMENT"}
        event = {"kind": "label", "input": {"text": word}, "spans": [span]}
        send_feedback(client, PROJECT, event)
    with store.read() as session:
        project_id = get_project(session, PROJECT).id
    memory = SpanMemory(project_id, max_entries=2)
    assert memory.refresh(store) == 3
    assert set(memory.view.labels) == {("beta",), ("gamma",)}
    assert memory.refresh(store) == 0  # read once


# --- the merge itself, on spans given by hand --------------------------------------------
def _model(text: str, surface: str, label: str, score: float) -> dict[str, Any]:
    start = text.index(surface)
    return {"start": start, "end": start + len(surface), "label": label, "score": score}


def _view(**forms: str | None) -> View:
    """A gazetteer of these forms ("_" for a space), None for a suppressed one."""
    entries = {form_of(f.replace("_", " ")) or (): Entry(label, 1) for f, label in forms.items()}
    return View.of(entries)


def test_merge_prefers_the_higher_score_and_leaves_agreeing_spans_to_the_model() -> None:
    text = "Flowserve pump at 4 bar"
    view = _view(flowserve_pump="EQUIPMENT", bar="MEASURE", at=None)
    sure = _model(text, "Flowserve pump", "EQUIPMENT", 0.999)
    merged = merge([sure, _model(text, "at", "MEASURE", 0.9)], view, text)
    assert [(s["text"], s["source"]) for s in merged] == [
        ("Flowserve pump", "model"),  # same span and label: the model's
        ("bar", "memory"),
    ]
    beaten = merge([_model(text, "4 bar", "MEASURE", 0.995)], view, text)
    assert [(s["text"], s["source"]) for s in beaten] == [
        ("Flowserve pump", "memory"),
        ("4 bar", "model"),  # more sure than the memory: it keeps the overlap
    ]
    found = matches(view, "flowserve pumpkin bar-bar")
    assert found == [(18, 21, "MEASURE", 1), (22, 25, "MEASURE", 1)]
