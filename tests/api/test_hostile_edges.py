"""Odd paths, odd bytes and odd limits (issue 11, faults 7 and 8): each is a clear 4xx with a
message that says what is wrong, and nothing partial is stored."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.store import Store
from fineloop.store.schema import Feedback, Interaction, Item, Project


def count(store: Store, model: Any) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def import_file(client: TestClient, project: str, resource: str, fmt: str, data: bytes) -> Any:
    url = f"/v1/projects/{project}/import/{resource}"
    return client.post(url, params={"format": fmt}, content=data)


# --- 7. body limits follow the route, not a substring of the path ---------------------


@pytest.fixture
def small_limits(settings: Settings, store: Store) -> Iterator[TestClient]:
    """JSON bodies up to 2 kB, imported files up to 64 kB."""
    tight = settings.model_copy(update={"max_request_bytes": 2_000, "max_import_bytes": 64_000})
    with TestClient(create_app(tight, store)) as client:
        yield client


def test_a_project_named_import_gets_the_json_limit_not_the_import_limit(
    small_limits: TestClient, store: Store
) -> None:
    created = small_limits.post("/v1/projects", json={"name": "import", "task": "embedding"})
    assert created.status_code == 201, created.text
    items = [{"id": f"i{n}", "text": "x" * 100} for n in range(40)]  # ~5 kB of JSON
    answer = small_limits.put("/v1/projects/import/items", json={"items": items})
    assert answer.status_code == 413
    assert answer.json()["message"] == (
        "request body is larger than 2000 bytes; split it into smaller batches"
    )
    assert count(store, Item) == 0


def test_the_import_route_itself_keeps_the_import_limit(
    small_limits: TestClient, store: Store
) -> None:
    small_limits.post("/v1/projects", json={"name": "import", "task": "embedding"})
    rows = b"".join(
        json.dumps({"id": f"i{n}", "text": "x" * 100}).encode() + b"\n" for n in range(40)
    )
    assert 2_000 < len(rows) < 64_000
    answer = import_file(small_limits, "import", "items", "jsonl", rows)
    assert answer.status_code == 200, answer.text
    assert count(store, Item) == 40
    too_big = import_file(small_limits, "import", "items", "jsonl", rows * 20)
    assert too_big.status_code == 413
    assert "larger than 64000 bytes" in too_big.json()["message"]


# --- 8a. a NUL byte in a static path -----------------------------------------------------


def test_a_nul_byte_in_a_static_path_is_a_404_with_nothing_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        answers = [client.get(path) for path in ("/static/%00", "/static/a%00b.js")]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].text == "not found"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- 8b. text that is not UTF-8, in every import format -----------------------------------


def parquet_with_bad_text(row: int, rows: int = 3) -> bytes:
    """A Parquet file whose `text` column holds bytes that are not UTF-8 in `row` (1-based):
    pyarrow checks nothing when an array is built from raw buffers, as a foreign writer
    may have done."""
    values = [b"alpha", b"beta", b"gamma", b"delta"][:rows]
    values[row - 1] = b"bad \xff\xfe text"
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    text = pa.Array.from_buffers(
        pa.string(),
        len(values),
        [
            None,
            pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
            pa.py_buffer(b"".join(values)),
        ],
    )
    table = pa.table({"id": pa.array([f"i{n}" for n in range(rows)]), "text": text})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


BAD_TEXT = [
    ("parquet", "items", parquet_with_bad_text(2), 2, "text"),
    ("csv", "items", b"id,text\na,Alpha\nb,Beta\nc,bad \xff text\n", 4, "text"),
    ("csv", "items", b"id,text\na,Alpha\nb,Beta\n\xc3,Gamma\n", 4, "id"),
    ("jsonl", "items", b'{"id": "a", "text": "A"}\n{"id": "b", "text": "bad \xff"}\n', 2, "text"),
    (
        "jsonl",
        "items",
        b'{"id": "a", "text": "A", "metadata": {"tag": "\\ud800"}}\n',
        1,
        "metadata.tag",
    ),
    (
        "jsonl",
        "interactions",
        b'{"id": "x", "input": {"query": "ok"}, "output": {"items": ["\xfe"]}}\n',
        1,
        "output.items.0",
    ),
]


@pytest.mark.parametrize(("fmt", "resource", "data", "line", "column"), BAD_TEXT)
def test_text_that_is_not_utf8_is_a_422_naming_row_and_column(
    client: TestClient,
    store: Store,
    project: str,
    fmt: str,
    resource: str,
    data: bytes,
    line: int,
    column: str,
) -> None:
    answer = import_file(client, project, resource, fmt, data)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["message"] == f"line {line}: column {column!r} is not valid UTF-8 text"
    assert (body["line"], body["field"]) == (line, column)
    assert count(store, Item) + count(store, Interaction) == 0


def test_an_oasst_tree_that_is_not_utf8_is_a_422(
    client: TestClient, store: Store, project: str
) -> None:
    tree = {
        "message_tree_id": "t1",
        "prompt": {
            "message_id": "p1",
            "role": "prompter",
            "text": "hello",
            "replies": [{"message_id": "r1", "role": "assistant", "text": "@@"}],
        },
    }
    good = json.dumps(tree).encode()
    bad = good.replace(b"@@", b"\xff\xfe")
    answer = import_file(client, project, "interactions", "oasst", good + b"\n" + bad + b"\n")
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"] == (
        "line 2: column 'prompt.replies.0.text' is not valid UTF-8 text"
    )
    assert count(store, Interaction) + count(store, Feedback) == 0


# --- 8c. ids holding "/" ------------------------------------------------------------------


def test_item_and_interaction_ids_with_slashes_can_be_fetched(
    client: TestClient, project: str
) -> None:
    item = "docs/guide/reset-password"
    stored = client.put(
        f"/v1/projects/{project}/items", json={"items": [{"id": item, "text": "t"}]}
    )
    assert stored.status_code == 200, stored.text
    for path in (item, item.replace("/", "%2F")):
        found = client.get(f"/v1/projects/{project}/items/{path}")
        assert found.status_code == 200, found.text
        assert found.json()["id"] == item
    missing = client.get(f"/v1/projects/{project}/items/docs/guide")
    assert missing.status_code == 404
    assert missing.json()["message"] == f"unknown item 'docs/guide' in project {project!r}"

    interaction = "chat/2026/1"
    logged = client.post(
        f"/v1/projects/{project}/interactions",
        json={"id": interaction, "input": {"query": "q"}, "output": {"text": "a"}},
    )
    assert logged.status_code == 201, logged.text
    for path in (interaction, "chat%2F2026%2F1"):
        found = client.get(f"/v1/projects/{project}/interactions/{path}")
        assert found.status_code == 200, found.text
        assert found.json()["id"] == interaction


def test_project_names_with_slashes_are_refused(client: TestClient, store: Store) -> None:
    answer = client.post("/v1/projects", json={"name": "team/faq", "task": "embedding"})
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("name: String should match pattern")
    assert count(store, Project) == 0


def test_feedback_ids_are_numbers_so_a_slash_is_a_404_or_422(
    client: TestClient, project: str
) -> None:
    answer = client.get(f"/v1/projects/{project}/feedback/1%2F2")
    assert answer.status_code in (404, 422)


# --- 8d. base models outside the models root ----------------------------------------------


def test_a_base_model_outside_the_root_is_one_422_whether_or_not_it_exists(
    client: TestClient, store: Store, settings: Settings
) -> None:
    answers = [
        client.post("/v1/projects", json={"name": f"p{n}", "task": "embedding", "base_model": b})
        for n, b in enumerate(["/etc", "/etc/passwd", "/no/such/model", "../../etc"])
    ]
    assert {a.status_code for a in answers} == {422}
    assert {a.json()["message"] for a in answers} == {
        f"base model must be under {settings.resolved_models_root} (FINELOOP_MODELS_ROOT) "
        "or a packaged model"
    }
    assert count(store, Project) == 0
