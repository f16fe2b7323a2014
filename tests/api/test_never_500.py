"""Garbage to every route that takes input: always a 4xx JSON error, never a 500."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

SHOWN = {"items": [{"id": "reset"}, {"id": "refund"}, {"id": "invoice"}]}


@pytest.fixture
def ranking(client: TestClient, project: str) -> str:
    response = client.post(
        f"/v1/projects/{project}/interactions",
        json={"id": "call-1", "input": "forgot password", "output": SHOWN},
    )
    assert response.status_code == 201
    return "call-1"


# Valid bodies; each value in turn is swapped for garbage. Ids and idempotency keys sit in
# bodies of their own: once stored, a known id or key short-cuts every check after it.
VALID_BODIES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("POST", "/v1/projects"): [
        {
            "name": "new",
            "task": "fake",
            "base_model": "m",
            "description": "d",
            "reward_policy": {"thumb_up": 0.5, "rating_scale": {"min": 0, "max": 10}},
        }
    ],
    ("PATCH", "/v1/projects/faq"): [
        {"description": "d", "base_model": "m", "reward_policy": {"half_life_days": 30}},
        {
            "training_policy": {
                "trigger": {"feedback_count": 50, "debounce_seconds": 5},
                "webhook_url": "http://127.0.0.1:9/hook",
                "max_attempts": 2,
            }
        },
        {
            "serving_policy": {
                "online_adaptation": True,
                "adaptation_per_variant": True,
                "adaptation_min_similarity": 0.6,
            }
        },
    ],
    ("PUT", "/v1/projects/faq/items"): [
        {"items": [{"id": "a", "text": "t", "metadata": {"k": "v"}}]}
    ],
    ("POST", "/v1/projects/faq/interactions"): [
        {
            "input": "q",
            "output": SHOWN,
            "user_id": "u",
            "latency_ms": 1.5,
            "created_at": "2024-01-01T00:00:00Z",
            "metadata": {"k": 1},
        },
        {"id": "i-1", "input": "q", "output": "a"},  # after the first, a known id: no insert
    ],
    ("POST", "/v1/projects/faq/interactions/batch"): [
        {"interactions": [{"input": "q", "output": "a", "model_version": "v1"}]}
    ],
    ("POST", "/v1/projects/faq/feedback"): [
        {
            "kind": "selection",
            "interaction_id": "call-1",
            "selected": ["reset"],
            "user_id": "u",
            "timestamp": "2024-01-01T00:00:00Z",
            "difficulty": 0.5,
            "metadata": {"k": 1},
        },
        {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "k"},
        {"kind": "rating", "value": 4, "input": {"q": "x"}},
        {"kind": "preference", "chosen_interaction_id": "call-1", "rejected": "b"},
        {"kind": "label", "input": "q", "spans": [{"start": 0, "end": 1, "label": "X"}]},
    ],
    ("POST", "/v1/projects/faq/feedback/batch"): [
        {"events": [{"kind": "thumb", "value": "up", "interaction_id": "call-1"}]}
    ],
    ("POST", "/v1/keys"): [{"name": "k", "scope": "ingest"}],
    # the job, rollout and training-policy routes of the loop
    ("POST", "/v1/projects/faq/train"): [
        {"overrides": {"epochs": 1}, "nproc": 1, "launcher": "torchrun"}
    ],
    ("POST", "/v1/projects/faq/tune"): [
        {"n_trials": 2, "space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}}
    ],
    ("POST", "/v1/projects/faq/snapshots/build"): [{"seed": 1}],
    ("POST", "/v1/projects/faq/evaluate"): [{"version": "champion", "snapshot": "0" * 12}],
    ("PUT", "/v1/projects/faq/rollout"): [
        {
            "variants": [
                {"name": "champion", "target": "champion", "weight": 0.5},
                {"name": "challenger", "target": "v1", "weight": 0.5},
            ],
            "policy": {"min_samples": 10, "alpha": 0.05, "sequential": True, "effect_size": 0.1},
        }
    ],
}


GARBAGE_VALUES: list[Any] = [
    None,
    -1,
    2**70,
    1e308,
    float("nan"),
    float("inf"),
    True,
    "",
    "x" * 100_000,
    "a\x00b",
    "9999-12-31T23:59:59-05:00",
    [],
    {},
    [None, {"": None}],
    json.loads("[" * 200 + "]" * 200),
]


GARBAGE_BODIES: list[bytes] = [
    b"",
    b"hello",
    b'{"kind": "thumb"',
    b"null",
    b"42",
    b'"a string"',
    b"[1, 2, 3]",
    b"\xff\xfe{}",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a":' * 500 + b"1" + b"}" * 500,
    json.dumps({"input": "x" * 2_000_000}).encode(),
    b'{"kind": "rating", "value": NaN, "input": Infinity}',
]


def nodes(tree: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every value inside a JSON body, containers included."""
    if path:
        yield path
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from nodes(child, (*path, key))
    elif isinstance(tree, list):
        for index, child in enumerate(tree):
            yield from nodes(child, (*path, index))


def replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    mutated = copy.deepcopy(tree)
    parent = mutated
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return mutated


def mutations(valid: list[dict[str, Any]]) -> Iterator[bytes]:
    """Each valid body with one value at a time swapped for garbage, as compact JSON."""
    for body in valid:
        for path in nodes(body):
            for value in GARBAGE_VALUES:
                yield json.dumps(replaced(body, path, value)).encode()
        yield json.dumps({**body, "unexpected": 1}).encode()


def assert_never_500(client: TestClient, method: str, url: str, bodies: Iterator[bytes]) -> int:
    sent = 0
    for body in bodies:
        response = client.request(
            method, url, content=body, headers={"content-type": "application/json"}
        )
        sent += 1
        assert response.status_code < 500, (url, body[:200], response.text[:500])
        if response.status_code >= 400:
            assert "error" in response.json(), (url, body[:200], response.text[:500])
    return sent


@pytest.mark.parametrize(("method", "url"), list(VALID_BODIES))
def test_garbage_to_a_json_route_is_never_a_500(
    client: TestClient, project: str, ranking: str, method: str, url: str
) -> None:
    bodies = itertools.chain(GARBAGE_BODIES, mutations(VALID_BODIES[method, url]))

    sent = assert_never_500(client, method, url, bodies)

    assert sent > len(GARBAGE_BODIES)


IMPORT_ROWS = {
    "items": VALID_BODIES["PUT", "/v1/projects/faq/items"][0]["items"],
    "interactions": VALID_BODIES["POST", "/v1/projects/faq/interactions"],
    "feedback": VALID_BODIES["POST", "/v1/projects/faq/feedback"],
}


@pytest.mark.parametrize("resource", list(IMPORT_ROWS))
@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet", "oasst"])
def test_garbage_to_an_import_route_is_never_a_500(
    client: TestClient, project: str, ranking: str, resource: str, file_format: str
) -> None:
    url = f"/v1/projects/{project}/import/{resource}?format={file_format}"
    files = [
        *GARBAGE_BODIES,
        b'id,text\n\x00,"unterminated\n',
        b"PAR1\x00\x00PAR1",
        b"\n".join(mutations(IMPORT_ROWS[resource])),  # one garbage row per line
    ]

    assert_never_500(client, "POST", url, iter(files))


@pytest.mark.parametrize(
    "url",
    [
        f"/v1/projects/faq/feedback/{2**70}",
        f"/v1/projects/faq/feedback?after={2**70}",
        f"/v1/projects/faq/items?after={2**70}",
        "/v1/projects/faq/feedback?since=0001-01-01T00:00:00%2B05:00",
        "/v1/projects/faq/feedback?min_reward=nan",
        "/v1/projects/faq/interactions?before=9999-12-31T23:59:59-05:00",
        "/v1/projects/faq/stats?bucket=year",
        f"/v1/projects/faq/interactions/{'x' * 5000}",
    ],
)
def test_garbage_in_paths_and_queries_is_never_a_500(
    client: TestClient, project: str, url: str
) -> None:
    response = client.get(url)

    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
