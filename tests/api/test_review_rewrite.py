"""Rewriting a queued interaction (POST /v1/projects/{p}/review/{interaction}): each family
says what a reviewer starts from and how to write it (the queue item's `edit`), reads the
rewritten text back into an ordinary feedback event, and that event is stored through the
same checks as POST .../feedback. The interaction then leaves the queue."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fineloop.tasks.base import TaskDefaults

TEXT = "Pump P-101 feeds pump P-102 at 5 bar; P-101 trips."


def create(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/v1/projects", json=body)
    assert response.status_code == 201, response.text
    return str(body["name"])


def log(client: TestClient, project: str, rows: list[dict[str, Any]]) -> None:
    response = client.post(
        f"/v1/projects/{project}/interactions/batch", json={"interactions": rows}
    )
    assert response.status_code == 201, response.text


def queued(client: TestClient, project: str) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/projects/{project}/review", params={"ranking": "recent"})
    assert response.status_code == 200, response.text
    return {item["interaction"]["id"]: item for item in response.json()["items"]}


def rewrite(client: TestClient, project: str, interaction: str, **body: Any) -> Any:
    return client.post(f"/v1/projects/{project}/review/{interaction}", json=body)


def stored(client: TestClient, project: str, interaction: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/projects/{project}/feedback", params={"interaction_id": interaction}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_an_embedding_ranking_is_labelled_with_the_right_items_even_unshown(
    client: TestClient, project: str
) -> None:
    items = [{"id": f"doc{i}", "text": f"answer number {i}"} for i in range(4)]
    assert client.put(f"/v1/projects/{project}/items", json={"items": items}).status_code == 200
    shown = {"items": [{"id": "doc0", "score": 0.9}, {"id": "doc1", "score": 0.8}]}
    log(client, project, [{"id": "q1", "input": "how do I", "output": shown}])
    edit = queued(client, project)["q1"]["edit"]
    assert edit["action"] == "label" and edit["text"] == "doc0"  # the model's top item
    assert "one per line" in edit["hint"]

    missing = rewrite(client, project, "q1", text="doc3\nnope")
    assert missing.status_code == 422 and "'nope'" in missing.json()["message"]
    empty = rewrite(client, project, "q1", text="\n  \n")
    assert empty.status_code == 422 and "at least one item id" in empty.json()["message"]
    assert "q1" in queued(client, project)  # nothing was stored

    first = rewrite(client, project, "q1", text="doc3\n doc1 \ndoc3", idempotency_key="r1")
    assert first.status_code == 201, first.text
    again = rewrite(client, project, "q1", text="doc3\ndoc1", idempotency_key="r1")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    [event] = stored(client, project, "q1")
    assert event["kind"] == "label" and event["payload"]["items"] == ["doc3", "doc1"]
    assert event["metadata"]["source"] == "review"
    assert "q1" not in queued(client, project)


def test_the_catalog_is_searched_by_a_few_words_of_id_or_text(
    client: TestClient, project: str
) -> None:
    items = [
        {"id": "refund-policy", "text": "Money back within 30 days"},
        {"id": "shipping", "text": "We ship worldwide; refunds take 5 days"},
        {"id": "other", "text": "100% cotton"},
    ]
    client.put(f"/v1/projects/{project}/items", json={"items": items})

    def found(contains: str) -> list[str]:
        response = client.get(f"/v1/projects/{project}/items", params={"contains": contains})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert found("REFUND") == ["refund-policy", "shipping"]  # id or text, any case
    assert found("100%") == ["other"]  # % and _ are literal, not wildcards
    assert found("_") == []
    too_long = client.get(f"/v1/projects/{project}/items", params={"contains": "x" * 201})
    assert too_long.status_code == 422


def test_a_generation_reply_is_corrected_by_rewriting_it(client: TestClient) -> None:
    bot = create(client, {"name": "bot", "task": "generation"})
    reply = {"text": "Restart it.", "finish_reason": "stop"}
    log(client, bot, [{"id": "g1", "input": {"prompt": "My router blinks red"}, "output": reply}])
    edit = queued(client, bot)["g1"]["edit"]
    assert edit == {"action": "edit", "text": "Restart it.", "hint": edit["hint"]}

    same = rewrite(client, bot, "g1", text=" Restart it.\n")
    assert same.status_code == 422 and "unchanged" in same.json()["message"]
    assert rewrite(client, bot, "g1", text="   ").status_code == 422
    done = rewrite(client, bot, "g1", text="Hold reset for 10 s, then log in again.")
    assert done.status_code == 201, done.text
    [event] = stored(client, bot, "g1")
    assert event["kind"] == "correction"
    assert event["payload"]["output"] == "Hold reset for 10 s, then log in again."


def test_ner_spans_are_edited_as_lines_and_stored_as_a_full_correction(
    client: TestClient,
) -> None:
    tags = create(
        client,
        {"name": "tags", "task": "ner", "task_options": {"entity_types": ["PUMP", "MEASURE"]}},
    )
    first, second = TEXT.index("P-101"), TEXT.rindex("P-101")
    spans = [
        {"start": first, "end": first + 5, "label": "PUMP", "score": 0.9},
        {"start": second, "end": second + 5, "label": "PUMP", "score": 0.6},
    ]
    log(client, tags, [{"id": "n1", "input": {"text": TEXT}, "output": {"spans": spans}}])
    edit = queued(client, tags)["n1"]["edit"]
    # "P-101" appears twice, so each line pins its occurrence
    assert edit["text"] == f"PUMP: P-101 @{first}\nPUMP: P-101 @{second}"
    assert "PUMP, MEASURE" in edit["hint"]

    # the model missed P-102 and 5 bar, and the second P-101 is no entity here
    lines = f"PUMP: P-101 @{first}\nPUMP: P-102\n\nMEASURE: 5 bar"
    done = rewrite(client, tags, "n1", text=lines)
    assert done.status_code == 201, done.text
    [event] = stored(client, tags, "n1")
    assert event["kind"] == "correction"
    assert event["payload"]["output"]["spans"] == [
        {"start": first, "end": first + 5, "label": "PUMP"},
        {"start": TEXT.index("P-102"), "end": TEXT.index("P-102") + 5, "label": "PUMP"},
        {"start": TEXT.index("5 bar"), "end": TEXT.index("5 bar") + 5, "label": "MEASURE"},
    ]


def test_ner_lines_that_cannot_be_read_say_which_line_and_why(client: TestClient) -> None:
    tags = create(
        client, {"name": "tags", "task": "ner", "task_options": {"entity_types": ["PUMP"]}}
    )
    log(client, tags, [{"id": "n1", "input": {"text": TEXT}, "output": {"spans": []}}])
    assert queued(client, tags)["n1"]["edit"]["text"] == ""  # nothing found: no line

    def refused(text: str) -> str:
        response = rewrite(client, tags, "n1", text=text)
        assert response.status_code == 422, response.text
        return str(response.json()["message"])

    assert "line 2" in refused("PUMP: P-101\nP-102")  # no TYPE:
    assert "'P-999' is not in the text" in refused("PUMP: P-999")
    assert "not that many times" in refused("PUMP: P-101\nPUMP: P-101\nPUMP: P-101")
    assert "not at offset 3" in refused("PUMP: P-101 @3")
    assert "VALVE" in refused("VALVE: P-101")  # the family's own check: undeclared type
    overlapping = refused(f"PUMP: P-101 @{TEXT.index('P-101')}\nPUMP: 101 @{TEXT.index('101')}")
    assert "overlap" in overlapping
    assert stored(client, tags, "n1") == []
    # no line at all says the text holds no entity: a correction with an empty span set
    assert rewrite(client, tags, "n1", text="").status_code == 201
    assert stored(client, tags, "n1")[0]["payload"]["output"] == {"spans": []}


def test_an_interaction_id_holding_a_slash_is_rewritten_and_bad_bodies_are_422s(
    client: TestClient, project: str
) -> None:
    client.put(f"/v1/projects/{project}/items", json={"items": [{"id": "doc0", "text": "a"}]})
    shown = {"items": [{"id": "doc0", "score": 0.9}, {"id": "doc1", "score": 0.8}]}
    log(client, project, [{"id": "chat/42", "input": "q", "output": shown}])
    for body in ({"text": True}, {"text": "doc0", "colour": 1}, {"text": "doc0", "user_id": 2**70}):
        bad = rewrite(client, project, "chat/42", **body)
        assert bad.status_code == 422 and bad.json()["message"], body
    assert rewrite(client, project, "chat/42", text="doc0").status_code == 201
    assert stored(client, project, "chat/42")[0]["payload"]["items"] == ["doc0"]


def test_unknown_interactions_and_oversized_texts_are_refused(
    client: TestClient, project: str
) -> None:
    assert rewrite(client, project, "nope", text="doc0").status_code == 404
    assert rewrite(client, "ghost", "q1", text="doc0").status_code == 404
    log(client, project, [{"id": "raw", "input": "q", "output": {"text": "no ranking"}}])
    cannot = rewrite(client, project, "raw", text="doc0")
    assert cannot.status_code == 422 and "cannot be rewritten" in cannot.json()["message"]
    assert queued(client, project)["raw"]["edit"] is None
    big = rewrite(client, project, "raw", text="x" * 100_001)
    assert big.status_code == 422
    typed = client.post(f"/v1/projects/{project}/review/raw", json={"text": 5})
    assert typed.status_code == 422


def test_by_default_a_family_edits_its_output_as_json() -> None:
    """What a family that says nothing about review gets: the output as JSON, read back as
    a correction (a string output stays a string)."""
    family = TaskDefaults()
    shown = ({"text": "a"}, {"label": "spam", "score": 0.7})
    edit = family.review_edit({}, shown)
    assert edit is not None and edit.action == "edit"
    assert family.review_event({}, shown, edit.text) == {"kind": "correction", "output": shown[1]}
    assert family.review_event({}, ("a", "yes"), "no") == {"kind": "correction", "output": "no"}
    assert family.review_edit({}, ("a", None)) is None
    try:
        family.review_event({}, shown, "{not json")
    except Exception as error:  # Invalid: says what to fix
        assert "not JSON" in str(error)
    else:
        raise AssertionError("broken JSON was read")
