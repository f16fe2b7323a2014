"""Open-Assistant trees: 100 English conversations become interactions, thumbs and preferences.

The expected counts are computed here by walking the trees, independently of the converter,
and compared with what the store holds after the import.
"""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import DATASETS, POSTGRES_ADMIN_URL, _admin
from fineloop.config import get_settings
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.store.schema import Feedback, Interaction
from fineloop.transfer.service import export_file, import_file

TREES = DATASETS / "oasst-en100" / "en_100_tree.jsonl"


def _messages(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield message
    for reply in message.get("replies", []):
        yield from _messages(reply)


def _walk_trees() -> dict[str, int]:
    """Counts straight from the file: replies, their emoji votes, ranked sibling pairs."""
    counts = {"assistant": 0, "up": 0, "down": 0, "pairs": 0}
    for line in TREES.read_text().splitlines():
        for message in _messages(json.loads(line)["prompt"]):
            if message["role"] == "assistant":
                counts["assistant"] += 1
                emojis = message.get("emojis", {})
                counts["up"] += emojis.get("+1", 0)
                counts["down"] += emojis.get("-1", 0)
            ranks = [
                reply["rank"]
                for reply in message.get("replies", [])
                if reply["role"] == "assistant" and reply.get("rank") is not None
            ]
            counts["pairs"] += sum(a != b for a, b in itertools.combinations(ranks, 2))
    return counts


def _stored(store: Store) -> dict[str, int]:
    """What a store holds: interactions and feedback by kind and value."""
    with store.read() as session:
        interactions = session.scalar(select(func.count()).select_from(Interaction))
        rows = session.execute(select(Feedback.kind, Feedback.payload)).all()
    thumbs = [payload["value"] for kind, payload in rows if kind == "thumb"]
    return {
        "interactions": interactions or 0,
        "up": thumbs.count("up"),
        "down": thumbs.count("down"),
        "preferences": sum(kind == "preference" for kind, _ in rows),
        "feedback": len(rows),
    }


@pytest.fixture(scope="module")
def tree_counts() -> dict[str, int]:
    assert TREES.exists(), f"the OASST sample is missing: {TREES} (../shared/datasets)"
    return _walk_trees()


def test_the_trees_hold_what_the_readme_promises(tree_counts: dict[str, int]) -> None:
    assert tree_counts["assistant"] == 687
    assert (tree_counts["up"], tree_counts["down"]) == (854, 372)
    assert tree_counts["pairs"] > 0


def test_import_through_the_api(
    client: TestClient, store: Store, project: str, tree_counts: dict[str, int]
) -> None:
    response = client.post(
        f"/v1/projects/{project}/import/feedback",
        params={"format": "oasst"},
        content=TREES.read_bytes(),
    )
    assert response.status_code == 200, response.text
    reports = {report["resource"]: report for report in response.json()}
    assert reports["interactions"]["created"] == 687
    events = 854 + 372 + tree_counts["pairs"]
    assert reports["feedback"]["created"] == events
    assert _stored(store) == {
        "interactions": 687,
        "up": 854,
        "down": 372,
        "preferences": tree_counts["pairs"],
        "feedback": events,
    }
    stats = client.get(f"/v1/projects/{project}/stats").json()
    assert stats["total"] == events
    assert stats["by_kind"] == {"preference": tree_counts["pairs"], "thumb": 854 + 372}


def test_a_second_import_stores_nothing_new(store: Store, project: str) -> None:
    data = TREES.read_bytes()
    import_file(store, project, "feedback", data, "oasst")
    before = _stored(store)
    reports = import_file(store, project, "feedback", data, "oasst")
    assert [(r.resource, r.created) for r in reports] == [("interactions", 0), ("feedback", 0)]
    assert sum(r.duplicates for r in reports) == before["interactions"] + before["feedback"]
    assert _stored(store) == before


def test_preferences_choose_the_better_ranked_reply(store: Store, project: str) -> None:
    import_file(store, project, "feedback", TREES.read_bytes(), "oasst")
    with store.read() as session:
        rows = session.execute(select(Interaction.id, Interaction.interaction_metadata))
        meta = {row.id: row.interaction_metadata for row in rows}
        payloads = session.scalars(
            select(Feedback.payload).where(Feedback.kind == "preference")
        ).all()
    assert payloads
    for payload in payloads:
        chosen, rejected = payload["chosen_interaction_id"], payload["rejected_interaction_id"]
        assert meta[chosen]["rank"] < meta[rejected]["rank"]
        assert meta[chosen]["parent_id"] == meta[rejected]["parent_id"]  # same prompt


def test_each_reply_sees_the_conversation_before_it(store: Store, project: str) -> None:
    import_file(store, project, "feedback", TREES.read_bytes(), "oasst")
    first = json.loads(TREES.read_text().splitlines()[0])["prompt"]
    reply = first["replies"][0]
    with store.read() as session:
        row = session.scalar(select(Interaction).where(Interaction.id == reply["message_id"]))
    assert row is not None
    assert row.input == {"messages": [{"role": "user", "content": first["text"]}]}
    assert row.output == {"text": reply["text"]}


@pytest.fixture
def fresh(tmp_path: Path, _template: str) -> Iterator[Store]:
    """A second, independent store with an empty project 'copy'."""
    data_dir = tmp_path / "fresh"
    data_dir.mkdir()
    name = ""
    if POSTGRES_ADMIN_URL:
        name = f"fl_f_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"')
        url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        settings = get_settings(data_dir=data_dir, database_url=url)
    else:
        shutil.copy(_template, data_dir / "fineloop.db")
        settings = get_settings(data_dir=data_dir)
    store = Store.open(settings)
    with store.write() as session:
        create_project(session, ProjectCreate(name="copy", task="fake"))
    yield store
    store.close()
    if name:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_then_import_into_a_fresh_project(
    store: Store, project: str, fresh: Store, fmt: str
) -> None:
    import_file(store, project, "feedback", TREES.read_bytes(), "oasst")
    original = _stored(store)
    for resource in ("interactions", "feedback"):  # interactions first: feedback points at them
        data = b"".join(export_file(store, project, resource, fmt))
        [report] = import_file(fresh, "copy", resource, data, fmt)
        assert report.created == report.rows
    assert _stored(fresh) == original
