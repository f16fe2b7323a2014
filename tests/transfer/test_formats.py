"""Import and export: every resource survives JSONL, CSV and Parquet, and bad files name the line.

Round trips copy a project into a second, fresh store (another instance), the way a user
moves data between installations; interaction ids are scoped to their project, so a copy
into a second project of the same store works too.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import POSTGRES_ADMIN_URL, _admin
from fineloop.api import create_app
from fineloop.config import get_settings
from fineloop.errors import BatchRejected, Invalid
from fineloop.store import Store
from fineloop.store.schema import Feedback, Interaction, Item
from fineloop.transfer.service import export_file, import_file

FORMATS = ["jsonl", "csv", "parquet"]
WHEN = "2024-05-01T10:00:00+00:00"

ITEMS: list[dict[str, Any]] = [
    {"id": "reset", "text": "How do I reset my password?", "metadata": {"tags": ["account"]}},
    {"id": "email", "text": 'Change e-mail, "quickly",\nin two steps', "metadata": {}},
    {"id": "refund", "text": "Remboursement — ça marche ?", "metadata": {"lang": "fr", "n": 2}},
]
INTERACTIONS: list[dict[str, Any]] = [
    {
        "id": "i-rank",
        "input": 'forgot my "password", help',
        "output": {"items": [{"id": "reset", "score": 0.9}, {"id": "email", "score": 0.4}]},
        "model_version": "v1",
        "variant": "B",
        "user_id": "u1",
        "latency_ms": 12.5,
        "created_at": "2024-05-01T09:00:00+00:00",
        "metadata": {"page": {"n": 1, "tags": ["x"]}},
    },
    {
        "id": "i-chat",
        "input": {"messages": [{"role": "user", "content": "Hi,\nthere"}]},
        "output": {"text": "Hello!"},
        "created_at": "2024-05-01T09:01:00+00:00",
    },
    {
        "id": "i-text",
        "input": "42",
        "output": "a plain string output",
        "created_at": "2024-05-01T09:02:00+00:00",
    },
]
EVENTS: list[dict[str, Any]] = [
    {"kind": "thumb", "value": "up", "interaction_id": "i-rank", "user_id": "u1"},
    {"kind": "rating", "value": 4, "interaction_id": "i-chat", "difficulty": 0.25},
    {"kind": "correction", "interaction_id": "i-text", "output": "a better, longer answer"},
    {"kind": "selection", "interaction_id": "i-rank", "selected": ["email"], "rejected": ["reset"]},
    {
        "kind": "preference",
        "chosen_interaction_id": "i-chat",
        "rejected_interaction_id": "i-text",
        "metadata": {"source": "test"},
    },
    {
        "kind": "preference",
        "input": "Say hi",
        "chosen": "Hi there!",
        "rejected": {"text": "Go away"},
    },
    {
        "kind": "label",
        "input": "Alice lives in Paris",
        "spans": [{"start": 0, "end": 5, "label": "PER"}, {"start": 15, "end": 20, "label": "LOC"}],
    },
    {"kind": "label", "interaction_id": "i-rank", "items": ["reset"]},
    {"kind": "label", "input": "where is my invoice", "label": "billing"},
]


def _events() -> list[dict[str, Any]]:
    return [
        {**event, "idempotency_key": f"key-{n}", "timestamp": WHEN}
        for n, event in enumerate(EVENTS)
    ]


def _seed(client: TestClient, project: str) -> None:
    base = f"/v1/projects/{project}"
    assert client.put(f"{base}/items", json={"items": ITEMS}).status_code == 200
    response = client.post(f"{base}/interactions/batch", json={"interactions": INTERACTIONS})
    assert response.status_code == 201, response.text
    response = client.post(f"{base}/feedback/batch", json={"events": _events()})
    assert response.status_code == 201, response.text


@pytest.fixture
def other(tmp_path: Path, _template: str) -> Iterator[TestClient]:
    """A second, independent fineloop instance with an empty project 'copy'."""
    data_dir = tmp_path / "other"
    data_dir.mkdir()
    name = ""
    if POSTGRES_ADMIN_URL:
        name = f"fl_o_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"')
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        settings = get_settings(data_dir=data_dir, database_url=url)
    else:
        shutil.copy(_template, data_dir / "fineloop.db")
        settings = get_settings(data_dir=data_dir)
    store = Store.open(settings)
    with TestClient(create_app(settings, store)) as client:
        response = client.post("/v1/projects", json={"name": "copy", "task": "embedding"})
        assert response.status_code == 201
        yield client
    store.close()
    if name:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _export(client: TestClient, project: str, resource: str, fmt: str) -> bytes:
    response = client.get(f"/v1/projects/{project}/export/{resource}", params={"format": fmt})
    assert response.status_code == 200, response.text
    data: bytes = response.content
    return data


def _import(client: TestClient, project: str, resource: str, fmt: str, data: bytes) -> Any:
    return client.post(
        f"/v1/projects/{project}/import/{resource}", params={"format": fmt}, content=data
    )


def _rows(client: TestClient, project: str, resource: str) -> list[dict[str, Any]]:
    """A resource as JSONL rows, without what the store assigns (feedback ids, arrival)."""
    data = _export(client, project, resource, "jsonl")
    rows = [json.loads(line) for line in data.splitlines()]
    return [{k: v for k, v in row.items() if k not in {"id", "received_at"}} for row in rows]


def _interaction_ids(client: TestClient, project: str) -> list[str]:
    data = _export(client, project, "interactions", "jsonl")
    return [json.loads(line)["id"] for line in data.splitlines()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_through_the_api(
    client: TestClient, project: str, other: TestClient, fmt: str
) -> None:
    _seed(client, project)
    for resource in ("items", "interactions", "feedback"):
        response = _import(other, "copy", resource, fmt, _export(client, project, resource, fmt))
        assert response.status_code == 200, response.text
        [report] = response.json()
        assert report["resource"] == resource
        assert (
            report["rows"]
            == report["created"]
            == {"items": 3, "interactions": 3, "feedback": 9}[resource]
        )
    assert _interaction_ids(other, "copy") == ["i-rank", "i-chat", "i-text"]
    for resource in ("items", "interactions", "feedback"):
        assert _rows(other, "copy", resource) == _rows(client, project, resource), resource


def test_round_trip_keeps_every_feedback_payload(
    client: TestClient, project: str, other: TestClient
) -> None:
    _seed(client, project)
    for resource in ("interactions", "feedback"):
        _import(other, "copy", resource, "csv", _export(client, project, resource, "csv"))
    copied = other.get("/v1/projects/copy/feedback", params={"limit": 100}).json()["items"]
    original = client.get(f"/v1/projects/{project}/feedback", params={"limit": 100}).json()
    assert len(copied) == len(original["items"]) == len(EVENTS)
    for mine, theirs in zip(original["items"], copied, strict=True):
        for field in ("kind", "payload", "interaction_id", "input", "reward", "timestamp"):
            assert theirs[field] == mine[field], field
    spans = next(row["payload"]["spans"] for row in copied if "spans" in row["payload"])
    assert spans[1] == {"start": 15, "end": 20, "label": "LOC"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_reimporting_an_export_stores_nothing_new(
    client: TestClient, project: str, fmt: str
) -> None:
    _seed(client, project)
    before = {r: _rows(client, project, r) for r in ("items", "interactions", "feedback")}
    for resource in ("items", "interactions", "feedback"):
        response = _import(client, project, resource, fmt, _export(client, project, resource, fmt))
        assert response.status_code == 200, response.text
        if resource != "items":  # items are upserted: rewritten in place, never duplicated
            assert response.json()[0]["created"] == 0
            assert response.json()[0]["duplicates"] == len(before[resource])
    for resource, rows in before.items():
        assert _rows(client, project, resource) == rows


def test_service_functions_round_trip_without_the_api(
    store: Store, client: TestClient, project: str, other: TestClient
) -> None:
    _seed(client, project)
    second: Store = other.app.state.store  # type: ignore[attr-defined]
    for resource in ("items", "interactions", "feedback"):
        data = b"".join(export_file(store, project, resource, "parquet"))
        [report] = import_file(second, "copy", resource, data, "parquet")
        assert report.created == report.rows
    with second.read() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == len(ITEMS)
        kinds = session.scalars(select(Feedback.kind).order_by(Feedback.id)).all()
        ids = session.scalars(select(Interaction.id).order_by(Interaction.created_at)).all()
    assert kinds == [event["kind"] for event in EVENTS]
    assert ids == ["i-rank", "i-chat", "i-text"]


def test_interaction_ids_are_scoped_to_their_project(client: TestClient, project: str) -> None:
    _seed(client, project)
    assert client.post("/v1/projects", json={"name": "twin", "task": "embedding"}).is_success
    data = _export(client, project, "interactions", "jsonl")
    response = _import(client, "twin", "interactions", "jsonl", data)
    assert response.status_code == 200, response.text
    assert _rows(client, "twin", "interactions") == _rows(client, project, "interactions")
    feedback = _export(client, project, "feedback", "jsonl")
    assert _import(client, "twin", "feedback", "jsonl", feedback).status_code == 200
    assert len(_rows(client, "twin", "feedback")) == len(EVENTS)


# --- errors name the line, and a failed import stores nothing ---------------------------


def _count(store: Store, model: type[Item] | type[Interaction] | type[Feedback]) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_malformed_json_on_line_3(client: TestClient, store: Store, project: str) -> None:
    data = b'{"id": "a", "text": "A"}\n{"id": "b", "text": "B"}\n{"id": "c", "text": \n'
    response = _import(client, project, "items", "jsonl", data)
    assert response.status_code == 422
    assert response.json()["message"].startswith("line 3: not valid JSON")
    with pytest.raises(Invalid, match=r"^line 3: not valid JSON"):
        import_file(store, project, "items", data, "jsonl")
    assert _count(store, Item) == 0


def test_jsonl_line_that_is_not_an_object(client: TestClient, store: Store, project: str) -> None:
    data = b'{"id": "a", "text": "A"}\n["id", "b"]\n'
    response = _import(client, project, "items", "jsonl", data)
    assert response.status_code == 422
    assert response.json()["message"] == "line 2: expected a JSON object per line"
    assert _count(store, Item) == 0


def test_csv_cell_that_must_hold_json(client: TestClient, store: Store, project: str) -> None:
    data = b'id,text,metadata\na,Alpha,{}\nb,Beta,"{""tags"": [1, 2]}"\nc,Gamma,{oops\n'
    response = _import(client, project, "items", "csv", data)
    assert response.status_code == 422
    body = response.json()
    assert body["message"].startswith("line 4: column 'metadata' must hold JSON")
    assert body["field"] == "metadata"
    assert _count(store, Item) == 0


def test_csv_row_with_more_cells_than_columns(store: Store, project: str) -> None:
    data = b"id,text\na,Alpha\nb,Beta,extra\n"
    with pytest.raises(Invalid, match=r"^line 3: more cells than header columns"):
        import_file(store, project, "items", data, "csv")
    assert _count(store, Item) == 0


def test_csv_line_numbers_count_quoted_newlines(store: Store, project: str) -> None:
    data = b'id,input,output,latency_ms\na,"two\nlines",r,1\nb,q,r,-3\n'
    with pytest.raises(BatchRejected) as caught:
        import_file(store, project, "interactions", data, "csv")
    [error] = caught.value.errors
    assert (error.line, error.field) == (4, "latency_ms")
    assert _count(store, Interaction) == 0


def test_bad_field_value_in_row_4_of_jsonl(client: TestClient, store: Store, project: str) -> None:
    rows = [
        {"kind": "thumb", "value": "up", "input": "q1"},
        None,  # a blank line: lines are counted as a text editor counts them
        {"kind": "rating", "value": 3, "input": "q2"},
        {"kind": "thumb", "value": "sideways", "input": "q3"},
        {"kind": "rating", "value": 5, "input": "q4"},
    ]
    data = "\n".join("" if row is None else json.dumps(row) for row in rows).encode()
    response = _import(client, project, "feedback", "jsonl", data)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_rows"
    assert [(e["line"], e["field"]) for e in body["invalid_rows"]] == [(4, "value")]
    assert "line 4" in body["message"] and "nothing was stored" in body["message"]
    with pytest.raises(BatchRejected) as caught:
        import_file(store, project, "feedback", data, "jsonl")
    assert caught.value.errors[0].line == 4
    assert _count(store, Feedback) == 0


def test_store_checks_name_the_line_too(client: TestClient, store: Store, project: str) -> None:
    """Rows valid on their own but wrong for the store (unknown interaction, off-scale)."""
    data = (
        b'{"kind": "thumb", "value": "up", "input": "q"}\n'
        b'{"kind": "thumb", "value": "up", "interaction_id": "missing"}\n'
        b'{"kind": "rating", "value": 9, "input": "q"}\n'
    )
    response = _import(client, project, "feedback", "jsonl", data)
    assert response.status_code == 422
    errors = [(e["line"], e["field"]) for e in response.json()["invalid_rows"]]
    assert errors == [(2, "interaction_id"), (3, "value")]
    assert _count(store, Feedback) == 0


def test_parquet_errors_name_the_row_as_the_line(store: Store, project: str) -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["Alpha", "Beta", ""]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    with pytest.raises(BatchRejected) as caught:
        import_file(store, project, "items", sink.getvalue(), "parquet")
    assert [(e.line, e.field) for e in caught.value.errors] == [(3, "text")]
    assert _count(store, Item) == 0


def test_unreadable_parquet_is_a_422(client: TestClient, project: str) -> None:
    response = _import(client, project, "items", "parquet", b"PAR1 definitely not parquet")
    assert response.status_code == 422
    assert "not a readable Parquet file" in response.json()["message"]


def test_unknown_format_and_project(client: TestClient, project: str) -> None:
    response = _import(client, project, "items", "xml", b"<items/>")
    assert response.status_code == 422
    assert response.json()["field"] == "format"
    assert "jsonl, csv, parquet" in response.json()["message"]
    response = _import(client, project, "items", "x" * 40, b"<items/>")  # not a format name
    assert response.status_code == 422, response.text
    response = client.get("/v1/projects/nope/export/items", params={"format": "csv"})
    assert response.status_code == 404


def test_export_names_the_file(client: TestClient, project: str) -> None:
    _seed(client, project)
    response = client.get(f"/v1/projects/{project}/export/items", params={"format": "csv"})
    assert response.headers["content-disposition"] == f'attachment; filename="{project}-items.csv"'
    assert response.text.splitlines()[0] == "id,text,metadata"


def test_exports_stream_every_row_past_one_page(store: Store, project: str) -> None:
    count = 2 * 2_000 + 1  # more than two pages of the export's keyset pagination
    same_moment = "2024-01-01T00:00:00+00:00"  # ties broken by id, no row lost or repeated
    interactions = [
        {"id": f"i{n:05}", "input": "q", "output": "a", "created_at": same_moment}
        for n in range(count)
    ]
    events = [
        {"kind": "thumb", "value": "up", "interaction_id": f"i{n:05}", "idempotency_key": f"{n}"}
        for n in range(count)
    ]
    for resource, rows in (("interactions", interactions), ("feedback", events)):
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        import_file(store, project, resource, data, "jsonl")
    exported = b"".join(export_file(store, project, "interactions", "csv")).splitlines()
    assert [line.split(b",")[0] for line in exported[1:]] == [
        f"i{n:05}".encode() for n in range(count)
    ]
    feedback = b"".join(export_file(store, project, "feedback", "jsonl")).splitlines()
    assert sorted(json.loads(line)["idempotency_key"] for line in feedback) == sorted(
        str(n) for n in range(count)
    )


def test_errors_past_the_first_chunk_keep_their_line(store: Store, project: str) -> None:
    lines = [json.dumps({"kind": "thumb", "value": "up", "input": f"q{n}"}) for n in range(5_010)]
    lines[5_004] = json.dumps({"kind": "thumb", "value": "up", "interaction_id": "missing"})
    with pytest.raises(BatchRejected) as caught:
        import_file(store, project, "feedback", "\n".join(lines).encode(), "jsonl")
    assert [(e.row, e.line, e.field) for e in caught.value.errors] == [
        (5_004, 5_005, "interaction_id")
    ]
    assert _count(store, Feedback) == 0  # the first chunk, though valid, was rolled back
