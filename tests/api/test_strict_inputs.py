"""Strict, bounded input types: one table of bad values, each a 4xx that stores nothing.

Three classes of input used to be accepted and then break the project for everyone (or be
stored as something else): integers past 64 bits (policies, metadata, filters), version
references in non-ASCII digits ('²' passes `isdigit()`, not `int()`), and booleans taken
as numbers (`k: true` was 1). Each case checks the status, the message, that nothing was
stored, and that the project still lists and searches afterwards.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Item
from serving.helpers import CATALOG, items

P = "shop"
HUGE = 2**70
DEEP: Any = "leaf"
for _ in range(40):
    DEEP = {"a": DEEP}
TWO_VARIANTS = [
    {"name": "champion", "target": "champion", "weight": 1},
    {"name": "challenger", "target": "v0", "weight": 1},
]


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    url: str
    body: Any
    says: tuple[str, ...]  # every one of these appears in the error message
    status: int = 422


def patch(policy: str, value: dict[str, Any], *says: str) -> tuple[Any, ...]:
    return ("PATCH", f"/v1/projects/{P}", {policy: value}, *says)


def case(id: str, method: str, url: str, body: Any, *says: str, status: int = 422) -> Case:
    return Case(id, method, url.replace("{p}", P), body, says, status)


def rated(**extra: Any) -> dict[str, Any]:
    return {"kind": "rating", "value": 4, "input": "q", **extra}


HUGE_INTEGERS = [
    case(
        "trigger.feedback_count",
        *patch("training_policy", {"trigger": {"feedback_count": HUGE}}, "feedback_count"),
    ),
    case(
        "trigger.interval_minutes",
        *patch("training_policy", {"trigger": {"interval_minutes": HUGE}}, "interval_minutes"),
    ),
    case("training seed", *patch("training_policy", {"seed": HUGE}, "seed", "4294967295")),
    case(
        "training overrides",
        *patch("training_policy", {"train": {"epochs": HUGE}}, "epochs", "64-bit"),
    ),
    case(
        "new project's seed",
        "POST",
        "/v1/projects",
        {"name": "other", "task": "embedding", "training_policy": {"seed": HUGE}},
        "seed",
    ),
    case(
        "item metadata",
        "PUT",
        "/v1/projects/{p}/items",
        {"items": [{"id": "x", "text": "t", "metadata": {"n": {"m": [HUGE]}}}]},
        "n.m[0]",
        "64-bit",
    ),
    case(
        "deep item metadata",
        "PUT",
        "/v1/projects/{p}/items",
        {"items": [{"id": "x", "text": "t", "metadata": DEEP}]},
        "nested deeper than 32",
    ),
    case(
        "interaction metadata",
        "POST",
        "/v1/projects/{p}/interactions",
        {"input": "q", "output": "a", "metadata": {"n": -HUGE}},
        "64-bit",
    ),
    case(
        "interaction output",
        "POST",
        "/v1/projects/{p}/interactions",
        {"input": "q", "output": {"score": HUGE}},
        "score",
        "64-bit",
    ),
    case(
        "feedback metadata",
        "POST",
        "/v1/projects/{p}/feedback",
        rated(metadata={"n": HUGE}),
        "64-bit",
    ),
    case(
        "search filter",
        "POST",
        "/v1/projects/{p}/search",
        {"query": "refund", "filters": {"n": 2**64}},
        "filters",
        "64-bit",
    ),
    case(
        "select filter",
        "POST",
        "/v1/projects/{p}/select",
        {"query": "refund", "filters": {"n": [1, HUGE]}},
        "filters",
        "64-bit",
    ),
    case(
        "train overrides",
        "POST",
        "/v1/projects/{p}/train",
        {"overrides": {"epochs": HUGE}},
        "64-bit",
    ),
    case("tune seed", "POST", "/v1/projects/{p}/tune", {"seed": HUGE}, "seed"),
    case("items cursor", "GET", f"/v1/projects/{{p}}/items?after={HUGE}", None, "after"),
    case("feedback cursor", "GET", f"/v1/projects/{{p}}/feedback?after={HUGE}", None, "after"),
    case("feedback id", "GET", f"/v1/projects/{{p}}/feedback/{HUGE}", None, "feedback_id"),
    case("key id", "DELETE", f"/v1/keys/{HUGE}", None, "key_id"),
]

VERSIONS = [
    case(
        "search",
        "POST",
        "/v1/projects/{p}/search",
        {"query": "refund", "version": "²"},
        "ASCII digits",
    ),
    case(
        "search, v prefix",
        "POST",
        "/v1/projects/{p}/search",
        {"query": "refund", "version": "v٣"},
        "ASCII digits",
    ),
    case(
        "search, past 64 bits",
        "POST",
        "/v1/projects/{p}/search",
        {"query": "refund", "version": "v" + "9" * 30},
        "that large",
    ),
    case(
        "select",
        "POST",
        "/v1/projects/{p}/select",
        {"query": "refund", "version": "²"},
        "ASCII digits",
    ),
    case(
        "embeddings",
        "POST",
        "/v1/embeddings",
        {"input": "refund", "model": f"{P}:v²"},
        "ASCII digits",
    ),
    case("version", "GET", "/v1/projects/{p}/versions/%C2%B2", None, "ASCII digits"),
    case("compare", "GET", "/v1/projects/{p}/versions/compare?a=v0&b=%C2%B2", None, "ASCII digits"),
    case("calibration", "GET", "/v1/projects/{p}/calibration?version=%C2%B2", None, "ASCII digits"),
    case("promote", "POST", "/v1/projects/{p}/promote", {"version": "²"}, "ASCII digits"),
    case(
        "rollout",
        "PUT",
        "/v1/projects/{p}/rollout",
        {"variants": [TWO_VARIANTS[0], {**TWO_VARIANTS[1], "target": "²"}]},
        "ASCII digits",
    ),
    case("evaluate", "POST", "/v1/projects/{p}/evaluate", {"version": "²"}, "ASCII digits"),
]

NUMBER, INTEGER = "valid number", "valid integer"
BOOLEANS = [
    case("rating value", "POST", "/v1/projects/{p}/feedback", rated(value=True), "value", NUMBER),
    case(
        "rating in a batch",
        "POST",
        "/v1/projects/{p}/feedback/batch",
        {"events": [rated(value=False)]},
        "value",
        NUMBER,
    ),
    case(
        "difficulty",
        "POST",
        "/v1/projects/{p}/feedback",
        rated(difficulty=True),
        "difficulty",
        NUMBER,
    ),
    case(
        "span start",
        "POST",
        "/v1/projects/{p}/feedback",
        {"kind": "label", "input": "q", "spans": [{"start": False, "end": 1, "label": "X"}]},
        "start",
        INTEGER,
    ),
    case(
        "latency_ms",
        "POST",
        "/v1/projects/{p}/interactions",
        {"input": "q", "output": "a", "latency_ms": True},
        "latency_ms",
        NUMBER,
    ),
    case(
        "created_at as a number",
        "POST",
        "/v1/projects/{p}/interactions",
        {"input": "q", "output": "a", "created_at": 0},
        "created_at",
        "ISO 8601",
    ),
    case(
        "timestamp as a boolean",
        "POST",
        "/v1/projects/{p}/feedback",
        rated(timestamp=True),
        "timestamp",
        "ISO 8601",
    ),
    case("k", "POST", "/v1/projects/{p}/search", {"query": "refund", "k": True}, "k", INTEGER),
    case(
        "k as text", "POST", "/v1/projects/{p}/search", {"query": "refund", "k": "3"}, "k", INTEGER
    ),
    case(
        "select threshold",
        "POST",
        "/v1/projects/{p}/select",
        {"query": "refund", "threshold": False},
        "threshold",
        NUMBER,
    ),
    case(
        "select max",
        "POST",
        "/v1/projects/{p}/select",
        {"query": "refund", "max": True},
        "max",
        INTEGER,
    ),
    case(
        "dimensions",
        "POST",
        "/v1/embeddings",
        {"input": "refund", "model": P, "dimensions": True},
        "dimensions",
        INTEGER,
    ),
    case(
        "select_threshold",
        *patch("serving_policy", {"select_threshold": False}, "select_threshold", NUMBER),
    ),
    case(
        "adaptation_strength",
        *patch("serving_policy", {"adaptation_strength": True}, "adaptation_strength", NUMBER),
    ),
    case(
        "max_query_chars",
        *patch("serving_policy", {"max_query_chars": True}, "max_query_chars", INTEGER),
    ),
    case("seed", *patch("training_policy", {"seed": True}, "seed", INTEGER)),
    case("gate_margin", *patch("training_policy", {"gate_margin": False}, "gate_margin", NUMBER)),
    case(
        "bootstrap_samples",
        *patch("training_policy", {"bootstrap_samples": True}, "bootstrap_samples", INTEGER),
    ),
    case(
        "max_attempts", *patch("training_policy", {"max_attempts": True}, "max_attempts", INTEGER)
    ),
    case(
        "feedback_count",
        *patch("training_policy", {"trigger": {"feedback_count": True}}, "feedback_count", INTEGER),
    ),
    case(
        "debounce_seconds",
        *patch(
            "training_policy", {"trigger": {"debounce_seconds": False}}, "debounce_seconds", INTEGER
        ),
    ),
    case("thumb_up", *patch("reward_policy", {"thumb_up": True}, "thumb_up", NUMBER)),
    case(
        "rating_scale.min", *patch("reward_policy", {"rating_scale": {"min": False}}, "min", NUMBER)
    ),
    case(
        "half_life_days",
        *patch("reward_policy", {"half_life_days": True}, "half_life_days", NUMBER),
    ),
    case(
        "quality_threshold",
        *patch("reward_policy", {"quality_threshold": False}, "quality_threshold", NUMBER),
    ),
    case(
        "variant weight",
        "PUT",
        "/v1/projects/{p}/rollout",
        {"variants": [TWO_VARIANTS[0], {**TWO_VARIANTS[1], "weight": True}]},
        "weight",
        NUMBER,
    ),
    case(
        "rollout min_samples",
        "PUT",
        "/v1/projects/{p}/rollout",
        {"variants": TWO_VARIANTS, "policy": {"min_samples": True}},
        "min_samples",
        INTEGER,
    ),
    case(
        "rollout alpha",
        "PUT",
        "/v1/projects/{p}/rollout",
        {"variants": TWO_VARIANTS, "policy": {"alpha": True}},
        "alpha",
        NUMBER,
    ),
    case(
        "snapshot seed", "POST", "/v1/projects/{p}/snapshots/build", {"seed": True}, "seed", INTEGER
    ),
    case("train nproc", "POST", "/v1/projects/{p}/train", {"nproc": True}, "nproc", INTEGER),
    case("tune n_trials", "POST", "/v1/projects/{p}/tune", {"n_trials": True}, "n_trials", INTEGER),
    case(
        "tune range",
        "POST",
        "/v1/projects/{p}/tune",
        {"space": {"learning_rate": {"type": "float", "low": True, "high": 1e-3}}},
        "low",
        NUMBER,
    ),
]

CASES = [
    *[pytest.param(c, id=f"huge int: {c.id}") for c in HUGE_INTEGERS],
    *[pytest.param(c, id=f"unicode version: {c.id}") for c in VERSIONS],
    *[pytest.param(c, id=f"boolean for a number: {c.id}") for c in BOOLEANS],
]


@pytest.fixture
def shop(client: TestClient, tiny_model: Path) -> str:
    """An embedding project on the tiny model with the catalog, already searched once."""
    created = client.post(
        "/v1/projects", json={"name": P, "task": "embedding", "base_model": str(tiny_model)}
    )
    assert created.status_code == 201, created.text
    upserted = client.put(f"/v1/projects/{P}/items", json={"items": items(CATALOG)})
    assert upserted.status_code == 200, upserted.text
    search(client)  # registers v0 and builds the index: later searches change nothing else
    return P


def search(client: TestClient, **body: Any) -> dict[str, Any]:
    """A search that must succeed (waiting out an index build that answers 503)."""
    for _attempt in range(60):
        response = client.post(f"/v1/projects/{P}/search", json={"query": "refund", **body})
        if response.status_code != 503:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def stored(client: TestClient) -> dict[str, Any]:
    """Everything a bad request could have written, read back through the API."""
    project = ok(client.get(f"/v1/projects/{P}"))
    project.pop("updated_at")
    urls = ["items?limit=1000", "interactions?limit=1000", "feedback?limit=1000", "jobs"]
    return {
        "projects": sorted(p["name"] for p in ok(client.get("/v1/projects"))),
        "project": project,
        **{url: ids(ok(client.get(f"/v1/projects/{P}/{url}"))) for url in urls},
        "items": ok(client.get(f"/v1/projects/{P}/items?limit=1000")),
        "aliases": ok(client.get(f"/v1/projects/{P}/aliases")),
        "rollout": client.get(f"/v1/projects/{P}/rollout").status_code,
        "snapshots": ids(ok(client.get(f"/v1/projects/{P}/snapshots"))),
    }


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def ids(body: Any) -> list[Any]:
    rows = body["items"] if isinstance(body, dict) else body
    return sorted(str(row["id"]) for row in rows)


def message(response: Any) -> str:
    error = response.json()["error"]
    return str(error["message"] if isinstance(error, dict) else response.json()["message"])


@pytest.mark.parametrize("bad", CASES)
def test_a_bad_value_is_a_4xx_that_stores_nothing(client: TestClient, shop: str, bad: Case) -> None:
    before = stored(client)

    response = client.request(bad.method, bad.url, json=bad.body)

    assert response.status_code == bad.status, response.text
    for words in bad.says:
        assert words in message(response), message(response)
    assert stored(client) == before
    assert search(client)["items"]


def test_numbers_still_take_integers_and_timestamps_take_iso_strings(
    client: TestClient, shop: str
) -> None:
    threshold = client.post(f"/v1/projects/{P}/select", json={"query": "refund", "threshold": 1})
    logged = client.post(
        f"/v1/projects/{P}/interactions",
        json={"id": "naive", "input": "q", "output": "a", "created_at": "2024-05-01T12:00:00"},
    )
    rating = client.post(
        f"/v1/projects/{P}/feedback", json=rated(timestamp="2024-05-01T14:00+02:00")
    )

    assert threshold.status_code == 200, threshold.text
    assert threshold.json()["threshold"] == 1.0
    assert logged.status_code == 201, logged.text
    assert ok(client.get(f"/v1/projects/{P}/interactions/naive"))["created_at"].startswith(
        "2024-05-01T12:00:00"
    )
    assert rating.status_code == 201, rating.text
    feedback = ok(client.get(f"/v1/projects/{P}/feedback/{rating.json()['id']}"))
    assert feedback["timestamp"].startswith("2024-05-01T12:00:00")
    assert feedback["payload"] == {"value": 4.0}


def test_version_numbers_in_ascii_digits_resolve(client: TestClient, shop: str) -> None:
    for ref in ("0", "v0", "V0"):
        assert search(client, version=ref)["model_version"] == "v0"
    unknown = client.post(f"/v1/projects/{P}/search", json={"query": "refund", "version": "v7"})
    assert unknown.status_code == 404, unknown.text


def test_rows_stored_before_the_checks_still_read_and_search(
    client: TestClient, store: Store, tiny_model: Path
) -> None:
    """Old rows: a float where an int belongs, a huge seed, a huge integer in metadata."""
    created = client.post(
        "/v1/projects", json={"name": P, "task": "embedding", "base_model": str(tiny_model)}
    )
    assert created.status_code == 201, created.text
    ok(client.put(f"/v1/projects/{P}/items", json={"items": items(CATALOG)}))
    with store.write() as session:
        project = get_project(session, P)
        project.training_policy = {"seed": float(HUGE), "trigger": {"feedback_count": 2.5}}
        project.serving_policy = {"select_threshold": 0.25, "max_query_chars": "many"}
        session.add(
            Item(
                project_id=project.id,
                item_id="old",
                text="a refund stored long ago",
                item_metadata={"n": HUGE, "section": "billing"},
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )

    listed = ok(client.get("/v1/projects"))
    shown = ok(client.get(f"/v1/projects/{P}"))
    item = ok(client.get(f"/v1/projects/{P}/items/old"))
    filtered = search(client, filters={"section": "billing"}, k=20)

    assert [p["name"] for p in listed] == [P]
    assert shown["training_policy"]["seed"] == 13  # the default, with a warning in the log
    assert shown["training_policy"]["trigger"]["feedback_count"] is None
    assert shown["serving_policy"]["select_threshold"] == 0.25  # valid fields are kept
    assert item["metadata"]["n"] == HUGE  # read back exactly, not as 1.18e21
    assert {hit["id"] for hit in filtered["items"]} == {"refund", "invoice", "cancel", "old"}
    assert ids(search(client, filters={"n": 2**62})) == []


def test_csv_text_cells_are_numbers_but_a_parquet_boolean_is_not(
    client: TestClient, shop: str
) -> None:
    url = f"/v1/projects/{P}/import/feedback"
    csv_file = b"kind,input,value,difficulty\nrating,q,4,0.5\n"
    table = pa.table({"kind": ["rating"], "input": ["q"], "value": [True]})
    sink = io.BytesIO()
    pq.write_table(table, sink)

    from_csv = client.post(url, params={"format": "csv"}, content=csv_file)
    before = stored(client)
    from_parquet = client.post(url, params={"format": "parquet"}, content=sink.getvalue())

    assert from_csv.status_code == 200, from_csv.text
    assert from_csv.json()[0]["created"] == 1
    assert from_parquet.status_code == 422, from_parquet.text
    assert "valid number" in message(from_parquet)
    assert stored(client) == before
